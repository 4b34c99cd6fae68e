"""Where state lives: the portal's choice, written as ``_portal_backend.tf``.

``write_backend_file`` writes the ``pg`` or ``local`` backend into the work directory
and refuses a rendered blueprint that declares its own ``backend`` or ``cloud`` block
(``find_backend_blocks``): the blueprint does not get to pick where state lives.
``pg`` credentials travel as ``PG_CONN_STR`` / ``PG_SCHEMA_NAME`` in the child's
environment only, so they land in no file (not ``.terraform/``, not the saved plan)
and no argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.clients.terraform.config import load_config, range_place
from pipelines.clients.terraform.errors import BackendConflict

BACKEND_FILE_NAME = "_portal_backend.tf"

# PG_SCHEMA_NAME goes unquoted into Terraform's CREATE SCHEMA: allow plain identifiers only.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class PgBackend:
    """State in PostgreSQL, one schema per account. The conn string is a secret."""

    conn_str: str = field(repr=False)
    schema_name: str

    def __post_init__(self) -> None:
        if not _SCHEMA_NAME.fullmatch(self.schema_name):
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
        return f'backend "local" {{\n    path = {hcl_string(str(self.path))}\n  }}'

    def environment(self) -> dict[str, str]:
        return {}


Backend = PgBackend | LocalBackend


def hcl_string(value: str) -> str:
    # A JSON string is a valid HCL string once template sequences are escaped.
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def write_backend_file(*, workdir: Path, backend: Backend) -> Path:
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


# Whether a file could declare a backend or cloud block, decided without Terraform and
# never wrongly "no". In HCL (.tf) a block type is an identifier written out as it is, and
# a nested block starts its own line (a one-line block holds no block), after blanks or
# the end of a /* comment */; so a word elsewhere (in a # comment, `cloud_account_id`)
# declares nothing. JSON (.tf.json, and any other file) may put the key anywhere and hide
# the word in escapes: there, the word anywhere or any backslash counts.
_BLOCK_WORD = rb"(?:backend|cloud)(?![A-Za-z0-9_-])"
_HCL_STATE_BLOCK = re.compile(rb"^(?:[ \t\f\v]*|[^\n]*\*/[^\n]*?)" + _BLOCK_WORD, re.MULTILINE)
_ANY_STATE_WORD = re.compile(_BLOCK_WORD)
_FOUND_CACHE_SIZE = 128
_found: OrderedDict[str, list[str]] = OrderedDict()
_found_lock = threading.Lock()


def find_backend_blocks(workdir: Path) -> list[str]:
    """Places ("file line N") where files in ``workdir`` other than ours declare a backend.

    Uses Terraform's own loader, so ``.tf``, ``.tf.json`` and override files all count.
    That loader is a fresh process (about 0.4 s), so it runs only when a file could hold
    such a block (``_may_declare_state``), and its answer is kept by the files' content.
    """
    files = _root_module_files(Path(workdir))
    if not any(_may_declare_state(name=name, data=data) for name, data in files):
        return []
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    key = digest.hexdigest()
    with _found_lock:
        if key in _found:
            _found.move_to_end(key)
            return list(_found[key])
    places = _loaded_backend_blocks(Path(workdir))
    with _found_lock:
        _found[key] = places
        while len(_found) > _FOUND_CACHE_SIZE:
            _found.popitem(last=False)
    return list(places)


def _root_module_files(workdir: Path) -> list[tuple[str, bytes]]:
    """Every file of the directory itself (the root module; Terraform reads no other for
    the backend), by name, with its content."""
    return sorted(
        (entry.name, entry.read_bytes())
        for entry in workdir.iterdir()
        if entry.is_file() and entry.name != BACKEND_FILE_NAME
    )


def _may_declare_state(*, name: str, data: bytes) -> bool:
    if name.endswith(".tf"):
        return _HCL_STATE_BLOCK.search(data) is not None
    return _ANY_STATE_WORD.search(data) is not None or b"\\" in data


def _loaded_backend_blocks(workdir: Path) -> list[str]:
    module, diagnostics = load_config(workdir)
    places: set[str] = set()
    for key in ("Backend", "CloudConfig"):
        block = module.get(key)
        if isinstance(block, dict):
            places.add(range_place(block.get("DeclRange")))
    for diag in diagnostics:
        summary = str(diag.get("Summary", ""))
        # Two backend blocks: the loader keeps the first and reports the second.
        if "backend" in summary.lower() or "cloud" in summary.lower():
            places.add(range_place(diag.get("Subject")))
    return sorted(p for p in places if p and not p.startswith(BACKEND_FILE_NAME))
