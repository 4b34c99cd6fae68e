"""COPY streaming from a source to a target: rows through this process (when they are
transformed here), or binary COPY bytes piped between two ``psql``."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import pq, sql

from pipelines.clients.postgres.connection import CopyCancelled, PostgresError, guarded
from pipelines.clients.postgres.tools import located, run_tools, tool_env
from pipelines.clients.process import Program

COPY_BATCH = 256 * 1024  # bytes handed to the target per write


def _copy_rows(
    *, conn: psycopg.Connection[Any], out: psycopg.Copy, tags: list[int] | None = None
) -> Iterator[Any]:
    """The rows of a ``COPY ... TO STDOUT`` in progress on ``conn``.

    Same rows as iterating ``out``, for about half the CPU: rows libpq has already
    buffered are taken with one ``PQgetCopyData`` call each (through psycopg's
    documented ``pgconn``), and only when none is buffered does ``out.read()`` wait
    for more. If the end of the copy turns up in the buffer, its final result is
    collected here (``Copy`` needs nothing more on exit for COPY TO), and its row
    count appended to ``tags`` (else psycopg sets the cursor's ``rowcount``).
    """
    pgconn = conn.pgconn
    get = pgconn.get_copy_data
    while True:
        size, data = get(1)  # non-blocking
        if size > 0:
            yield data
        elif size == 0:  # nothing buffered: psycopg waits for the next row (or the end)
            row = out.read()
            if not row:
                return
            yield row
        else:  # the copy ended (or failed): collect its result, as libpq requires
            error = None
            while (result := pgconn.get_result()) is not None:
                if result.status != pq.ExecStatus.COMMAND_OK:
                    error = result.error_message.decode(errors="replace").strip()
                elif tags is not None and result.command_tuples is not None:
                    tags.append(result.command_tuples)
            if error:
                raise psycopg.DatabaseError(error)
            return


def copy_table(
    *,
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    transform: Callable[[bytes], bytes] | None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream one table from ``source`` to ``target`` with COPY (text format).

    ``transform`` rewrites each row (one COPY text line); with None the bytes pass
    straight through. The target side truncates and copies in one transaction with
    FREEZE (rows are written frozen: no later anti-wraparound rewrite, and an
    interrupted copy leaves the table empty). Returns the number of rows.
    """
    name = sql.Identifier(schema, table)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    copy_out = sql.SQL("COPY {} ({}) TO STDOUT").format(name, cols)
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN WITH (FREEZE)").format(name, cols)
    with guarded(), target.transaction():
        target.execute(sql.SQL("TRUNCATE ONLY {}").format(name))
        with (
            source.cursor() as scur,
            target.cursor() as tcur,
            scur.copy(copy_out) as out,
            tcur.copy(copy_in) as into,
        ):
            messages = _copy_rows(conn=source, out=out)  # one row per message
            # Unmasked rows go on as the buffers libpq gave (bytes.join takes them).
            lines = messages if transform is None else (transform(bytes(m)) for m in messages)
            rows = _relay(
                lines=lines, into=into, stop=stop, progress=progress, what=f"{schema}.{table}"
            )
    return rows


def _relay(
    *,
    lines: Iterable[Any],
    into: psycopg.Copy,
    stop: threading.Event | None,
    progress: Callable[[int], None] | None,
    what: str,
) -> int:
    """Write COPY data to the target in batches, checking for a stop between batches;
    returns how many messages (about a row each) went."""
    batch: list[Any] = []
    size = count = 0
    for data in lines:
        batch.append(data)
        size += len(data)
        count += 1
        if size >= COPY_BATCH:
            into.write(b"".join(batch))
            batch, size = [], 0
            if stop is not None and stop.is_set():
                raise CopyCancelled(f"copy of {what} cancelled")
            if progress is not None:
                progress(count)
    if batch:
        into.write(b"".join(batch))
    return count


_COPY_TAG = re.compile(r"COPY (\d+)")
_TAKEN_TAG = re.compile(r"portal-copy-taken (\d+)")


def copy_table_binary(
    *,
    source_url: str,
    target_url: str,
    schema: str,
    table: str,
    columns: Sequence[str],
    snapshot: str | None = None,
    select: sql.Composable | None = None,
    session: Mapping[str, str] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    secrets: Iterable[str | None] = (),
) -> int:
    """Relay one table as binary COPY bytes from one ``psql`` to another: the rows are
    never parsed, and the bytes never pass through this process (nor its GIL).

    ``select`` (a query giving ``columns`` in order, with the columns' exact types)
    replaces ``COPY table (columns) TO STDOUT``: masking done by the source's server.
    ``session`` holds settings the query reads with ``current_setting`` (a masking
    key): they reach the source's psql in its environment (``PGOPTIONS``, so the
    server gets them in the connection's startup packet), never in argv or in a
    statement's text; ``/proc/PID/environ`` is readable only by the same user (and
    root), like the ``PGPASSWORD`` the tools already get. The source reads in
    ``snapshot``. The target truncates and copies in one transaction with FREEZE
    (rows are written frozen; an interrupted copy leaves the table empty). Returns
    the rows the source sent, checked equal to the rows the target took.
    """
    name = sql.Identifier(schema, table)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    copy_out = (
        sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(name, cols)
        if select is None
        else sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
    )
    # The source's script goes on its stdin. "-o /dev/stderr": its command tags
    # (COPY n) become output lines, while "\g /dev/stdout" sends the data down the pipe.
    begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
    if snapshot:
        begin += sql.SQL("SET TRANSACTION SNAPSHOT {};\n").format(sql.Literal(snapshot)).as_string()
    script = f"{begin}{copy_out.as_string()} \\g /dev/stdout\nCOMMIT;\n"
    copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(name, cols)
    truncate = sql.SQL("TRUNCATE ONLY {}").format(name)
    what = f"copy of {schema}.{table}"
    src_info, src_env = tool_env(source_url, session=session)
    tgt_info, tgt_env = tool_env(target_url)
    for env in (src_env, tgt_env):
        env["PGCLIENTENCODING"] = "UTF8"  # the caller checked both servers store UTF-8
    psql = ["psql", "--no-psqlrc", "--set=ON_ERROR_STOP=1"]
    lines: list[str] = []
    run_tools(
        programs=[
            Program(
                argv=located([*psql, "--output=/dev/stderr", "--file=-", f"--dbname={src_info}"]),
                env=src_env,
            ),
            Program(
                argv=located(
                    [
                        *psql,
                        "--quiet",
                        "--single-transaction",
                        f"--dbname={tgt_info}",
                        f"--command={truncate.as_string()}",
                        f"--command={copy_in.as_string()}",
                        "--command=\\echo portal-copy-taken :ROW_COUNT",
                    ]
                ),
                env=tgt_env,
            ),
        ],
        urls=[source_url, target_url],
        secrets=[*secrets, *(session or {}).values()],
        what=what,
        stdin_data=script.encode(),
        on_line=lines.append,
        should_cancel=should_cancel,
    )
    sent = [int(m.group(1)) for line in lines if (m := _COPY_TAG.fullmatch(line))]
    taken = [int(m.group(1)) for line in lines if (m := _TAKEN_TAG.fullmatch(line))]
    if len(sent) != 1 or sent != taken:
        raise PostgresError(f"{what}: the source sent {sent} rows, the target took {taken}")
    return sent[0]


def binary_copy_unsupported(conn: psycopg.Connection[Any]) -> set[int]:
    """Oids of tables with a column whose type has no binary send/receive function."""
    with guarded():
        rows = conn.execute(
            """
            SELECT DISTINCT a.attrelid FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            WHERE a.attnum > 0 AND NOT a.attisdropped
              AND (t.typsend::oid = 0 OR t.typreceive::oid = 0)
            """
        ).fetchall()
    return {int(r[0]) for r in rows}


def utf8_session(conn: psycopg.Connection[Any]) -> bool:
    """True if the server stores UTF-8 and the session reads UTF-8."""
    return all(
        conn.info.parameter_status(name) in ("UTF8", b"UTF8")
        for name in ("server_encoding", "client_encoding")
    )
