"""pg_dump, pg_restore and psql: run with the password and session settings in their
environment (never argv), their output redacted."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings as django_settings
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pipelines.clients.postgres.connection import (
    CopyCancelled,
    PostgresError,
    guarded,
    secrets_redactor,
    url_password,
)
from pipelines.clients.process import ProcessResult, Program, run_pipeline, run_process

TOOL_TIMEOUT_S = 6 * 3600
TOOL_TAIL_LINES = 40
# pg_dump and pg_restore see only this (and PGPASSWORD): nothing of the worker's
# environment, whose PG* variables would change what they connect to.
_TOOL_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8"}


def tool_env(url: str, *, session: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(connection string without password or options, minimal environment carrying the
    password and the options: ``session`` settings are added to them, never to argv)."""
    info = conninfo_to_dict(url)
    password = info.pop("password", None)
    options = [str(info.pop("options", None) or "")]
    for setting, value in (session or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_.]+", setting + value):
            raise ValueError(f"setting {setting}: only letters, digits, '_' and '.' can be passed")
        options.append(f"-c {setting}={value}")
    env = dict(_TOOL_ENV)
    if password:
        env["PGPASSWORD"] = str(password)
    if " ".join(options).strip():
        env["PGOPTIONS"] = " ".join(options).strip()  # libpq's options, from the environment
    return make_conninfo("", **info), env


def located(args: list[str]) -> list[str]:
    """The tool in ``PORTAL_PG_BIN_DIR``, else on the worker's PATH (the child's own PATH
    is the minimal one)."""
    folder = str(django_settings.PORTAL_PG_BIN_DIR or "")
    found = shutil.which(args[0], path=folder) if folder else shutil.which(args[0])
    return [found or args[0], *args[1:]]


def run_tools(
    *,
    programs: Sequence[Program],
    urls: Sequence[str],
    what: str,
    secrets: Iterable[str | None] = (),
    stdin_data: bytes | None = None,
    on_line: Callable[[str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> ProcessResult:
    """Run one tool, or a pipeline of them; raise PostgresError (or CopyCancelled)
    unless every one of them succeeded. Output is redacted of the URLs' passwords and
    ``secrets``."""
    try:
        done = run_pipeline(
            programs=programs,
            cwd=Path.cwd(),
            timeout_s=TOOL_TIMEOUT_S,
            redact=secrets_redactor([*(url_password(url) for url in urls), *secrets]),
            tail_size=TOOL_TAIL_LINES,
            stdin_data=stdin_data,
            on_line=on_line,
            should_cancel=should_cancel or (lambda: False),
        )
    except OSError as exc:
        raise PostgresError(f"{what} failed: {type(exc).__name__}", retryable=False) from None
    if done.cancelled:
        raise CopyCancelled(f"{what} cancelled")
    if done.timed_out:
        raise PostgresError(f"{what} failed: timed out after {TOOL_TIMEOUT_S} s")
    if done.returncode != 0:
        tail = "\n".join(done.tail).strip()[-2000:]
        codes = ", ".join(str(code) for code in done.returncodes) or str(done.returncode)
        raise PostgresError(f"{what} failed (exit {codes}): {tail}")
    return done


def _run_tool(*, args: list[str], url: str, what: str) -> None:
    conninfo, env = tool_env(url)
    args = [a.replace("{conninfo}", conninfo) for a in args]
    run_tools(programs=[Program(argv=located(args), env=env)], urls=[url], what=what)


def dump_schema(*, url: str, path: Path, snapshot: str | None = None) -> None:
    """``pg_dump --schema-only -Fc`` (pre-data and post-data) into ``path``."""
    args = ["pg_dump", "--schema-only", "--format=custom", "--no-owner", "--no-privileges"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    _run_tool(args=[*args, f"--file={path}", "--dbname={conninfo}"], url=url, what="pg_dump")


def restore_section(*, url: str, path: Path, section: str, role: str | None, jobs: int = 1) -> None:
    """``pg_restore --section=SECTION`` of a custom-format archive into ``url``."""
    args = [
        "pg_restore",
        f"--section={section}",
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
    ]
    if role:
        args.append(f"--role={role}")  # objects end up owned by the clone's role
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    _run_tool(args=[*args, "--dbname={conninfo}", str(path)], url=url, what=f"pg_restore {section}")


_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: catalog and object OIDs of the source."""

    line: str
    catalog_oid: int
    object_oid: int
    desc: str  # "INDEX public orders_user_id postgres", "FK CONSTRAINT ...", ...


def list_archive(path: Path, section: str) -> list[TocEntry]:
    """The entries of one section of a custom-format archive."""
    try:
        done = run_process(
            argv=located(["pg_restore", "--list", f"--section={section}", str(path)]),
            cwd=Path.cwd(), env=_TOOL_ENV, timeout_s=600, capture_stdout=True,
        )  # fmt: skip
    except OSError as exc:
        raise PostgresError(f"pg_restore --list failed: {type(exc).__name__}") from None
    if done.returncode != 0 or done.timed_out:
        tail = "\n".join(done.tail).strip()[-2000:]
        raise PostgresError(f"pg_restore --list failed: {tail}")
    entries = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        match = _TOC_LINE.match(line)
        if match:
            entries.append(TocEntry(line, int(match.group(2)), int(match.group(3)), match.group(4)))
    return entries


def table_objects(conn: psycopg.Connection[Any]) -> dict[tuple[int, int], int]:
    """(catalog oid, object oid) -> table oid for indexes and primary-key, unique and
    exclusion constraints of plain tables (not partitions): objects that only need
    their own table's data, so they can be built as soon as that table is copied."""
    with guarded():
        rows = conn.execute(
            """
            SELECT 'pg_class'::regclass::oid, i.indexrelid, i.indrelid
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            WHERE c.relkind = 'r' AND NOT c.relispartition
            UNION ALL
            SELECT 'pg_constraint'::regclass::oid, k.oid, k.conrelid
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            WHERE k.contype IN ('p', 'u', 'x') AND c.relkind = 'r' AND NOT c.relispartition
            """
        ).fetchall()
    return {(int(cat), int(obj)): int(rel) for cat, obj, rel in rows}


def restore_entries(
    *, url: str, path: Path, entries: Sequence[TocEntry], role: str | None, jobs: int = 1
) -> None:
    """``pg_restore --use-list``: only the given entries of the archive."""
    list_file = path.with_name(f"{path.stem}-{threading.get_ident()}-{len(entries)}.list")
    list_file.write_text("".join(e.line + "\n" for e in entries))
    args = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error"]
    if role:
        args.append(f"--role={role}")
    args += [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    try:
        _run_tool(
            args=[*args, f"--use-list={list_file}", "--dbname={conninfo}", str(path)],
            url=url,
            what="pg_restore",
        )
    finally:
        list_file.unlink(missing_ok=True)


def dump_restore_pipe(source_url: str, target_url: str) -> None:
    """``pg_dump -Fc SOURCE | pg_restore -d TARGET``: the plain, unmasked copy."""
    src_info, src_env = tool_env(source_url)
    tgt_info, tgt_env = tool_env(target_url)
    dump = ["pg_dump", "--format=custom", f"--dbname={src_info}"]
    restore = ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={tgt_info}"]
    run_tools(
        programs=[
            Program(argv=located(dump), env=src_env),
            Program(argv=located(restore), env=tgt_env),
        ],
        urls=[source_url, target_url],
        what="pg_dump | pg_restore",
    )
