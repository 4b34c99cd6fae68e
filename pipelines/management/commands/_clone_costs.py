"""What a masked clone costs the machine beyond the binary-COPY floor, each part timed
alone on a quiet server, for ``bench_clone --breakdown``.

Every part is work the floor does not do and a masked clone cannot skip: the source's
server masking each masked table (its ``COPY (SELECT masked ...)`` less the plain
``COPY``), the leak scan of the clone (the clone's own ``check_table`` less a plain row
count), and the clone's indexes on masked tables (rebuilt on the clone less the same
indexes rebuilt on the source: masked values arrive in random order). Each figure is
the machine's CPU time (``/proc/stat``, every process), the fastest of ``repeat``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pipelines.dbclone.clone_checks import check_table
from pipelines.dbclone.clone_plan import ClonePlan, TablePlan
from pipelines.dbclone.masking import Masker
from pipelines.dbclone.sql_masking import masked_select


@dataclass
class Timing:
    """A timed piece of work: wall seconds, and the machine's CPU while it ran (None
    where the kernel does not say)."""

    seconds: float = 0.0
    cpu_s: float | None = None
    busy_share: float | None = None

    def __str__(self) -> str:
        if self.cpu_s is None or self.busy_share is None:
            return f"{self.seconds:.2f}s"
        return f"{self.seconds:.2f}s ({self.cpu_s:.2f} CPU-s, machine {self.busy_share:.0%} busy)"


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every CPU since boot, from ``/proc/stat``."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    ticks = [int(value) for value in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


@contextmanager
def timed() -> Iterator[Timing]:
    timing = Timing()
    start, ticks = time.monotonic(), _cpu_ticks()
    try:
        yield timing
    finally:
        timing.seconds = time.monotonic() - start
        after = _cpu_ticks()
        if ticks is not None and after is not None and after[1] > ticks[1]:
            timing.cpu_s = (after[0] - ticks[0]) / os.sysconf("SC_CLK_TCK")
            timing.busy_share = (after[0] - ticks[0]) / (after[1] - ticks[1])


def fastest_cpu_s(*, work: Callable[[], object], repeat: int) -> float:
    """The least CPU time ``work`` took in ``repeat`` runs (its wall time where the
    kernel gives no CPU figure)."""
    best = math.inf
    for _ in range(repeat):
        with timed() as timing:
            work()
        best = min(best, timing.cpu_s if timing.cpu_s is not None else timing.seconds)
    return best


def _masked_tables(plan: ClonePlan) -> list[TablePlan]:
    return [t for t in plan.tables if t.masked_columns]


def _drain(conn: psycopg.Connection[Any], query: sql.Composable) -> None:
    """Run ``COPY (query) TO STDOUT`` in binary, as the clone's relay does, and drop
    the bytes."""
    copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        while copy.read():
            pass


def _fetch(conn: psycopg.Connection[Any], query: sql.Composed) -> None:
    conn.execute(query).fetchall()


Work = Callable[[], object]


def _extra_cpu_s(*, pairs: Iterable[tuple[Work, Work]], repeat: int) -> float:
    """The sum over ``pairs`` of (CPU of the work) less (CPU of its plain peer)."""
    total = sum(
        fastest_cpu_s(work=work, repeat=repeat) - fastest_cpu_s(work=plain, repeat=repeat)
        for work, plain in pairs
    )
    return max(total, 0.0)


def _name(table: TablePlan) -> sql.Identifier:
    return sql.Identifier(table.table.schema, table.table.name)


def masking_cpu_s(
    *, source: psycopg.Connection[Any], plan: ClonePlan, masker: Masker, repeat: int
) -> float:
    """CPU the source spends masking: each masked table's masked COPY less its plain one."""

    def pairs() -> Iterator[tuple[Work, Work]]:
        for table in _masked_tables(plan):
            masked = masked_select(plan=table, masker=masker)
            for setting, value in masked.session.items():  # as the relay's PGOPTIONS would
                source.execute("SELECT set_config(%s, %s, false)", (setting, value))
            columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
            plain = sql.SQL("SELECT {} FROM ONLY {}").format(columns, _name(table))
            yield partial(_drain, source, masked.query), partial(_drain, source, plain)

    return _extra_cpu_s(pairs=pairs(), repeat=repeat)


def leak_scan_cpu_s(
    *,
    source: psycopg.Connection[Any],
    clone: psycopg.Connection[Any],
    plan: ClonePlan,
    repeat: int,
) -> float:
    """CPU of the clone's checks of its masked tables, less a plain row count of each."""
    return _extra_cpu_s(
        pairs=(
            (
                partial(check_table, src=source, tgt=clone, table=table, collected={}),
                partial(
                    _fetch, clone, sql.SQL("SELECT count(*) FROM ONLY {}").format(_name(table))
                ),
            )
            for table in _masked_tables(plan)
        ),
        repeat=repeat,
    )


def index_cpu_s(
    *,
    source: psycopg.Connection[Any],
    clone: psycopg.Connection[Any],
    plan: ClonePlan,
    repeat: int,
) -> float:
    """CPU of rebuilding the masked tables' indexes on the clone, less on the source."""

    def pairs() -> Iterator[tuple[Work, Work]]:
        for table in _masked_tables(plan):
            names = source.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (table.table.schema, table.table.name),
            ).fetchall()
            for (name,) in names:
                index = sql.Identifier(table.table.schema, name)
                reindex = sql.SQL("REINDEX INDEX {}").format(index)
                yield partial(clone.execute, reindex), partial(source.execute, reindex)

    return _extra_cpu_s(pairs=pairs(), repeat=repeat)
