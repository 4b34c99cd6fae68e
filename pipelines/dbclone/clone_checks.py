"""The checks of a logical clone: row counts, foreign keys, and the leak scan proving no
source value of a masked column reached the clone; the rest of post-data meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import psycopg

from pipelines.clients import postgres as pg
from pipelines.dbclone.clone_plan import DETERMINISTIC, ClonePlan, TablePlan
from pipelines.dbclone.masking import (
    NULL_FIELD,
    ColumnType,
    Masker,
    Rule,
    could_produce,
    unescape_field,
)
from pipelines.dbclone.sql_masking import producible, text_value
from pipelines.dbclone.table_copy import Collected, Copied, CopyPool, PostData

LEAK_CANDIDATES_MAX = 1000


@dataclass(frozen=True)
class SourceFacts:
    """What the clone must reproduce besides the rows, read in the source's snapshot."""

    sequences: list[tuple[str, str, int | None]]
    foreign_keys: dict[tuple[str, str, str], bool]
    matviews: list[tuple[str, str, bool]]


TableChecks = tuple[int, dict[str, int]]  # rows in the clone, leaked values per column


class EarlyChecks:
    """Each table's row count and leak scan, started as soon as its copy is done, on a
    thread of its own (with its own connections to the source's snapshot and the clone),
    while other tables still copy: they read only that table's rows, no index."""

    def __init__(self, *, pool: CopyPool) -> None:
        self.pool = pool
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clone-check")
        self._futures: dict[str, Future[TableChecks]] = {}

    def submit(self, table: TablePlan, collected: Collected) -> None:
        self._futures[table.name] = self._executor.submit(self._check, table, collected)

    def _check(self, table: TablePlan, collected: Collected) -> TableChecks:
        if self.pool.stop.is_set():
            raise pg.CopyCancelled("cancelled")
        src, tgt = self.pool.connections()
        return check_table(src=src, tgt=tgt, table=table, collected=collected)

    def results(self, tables: list[TablePlan]) -> list[TableChecks]:
        """The checks of ``tables``, in order (a table not submitted is checked now)."""
        for table in tables:
            if table.name not in self._futures:
                self.submit(table, {})
        return [self._futures[table.name].result() for table in tables]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def finish_and_check(
    *,
    pool: CopyPool,
    plan: ClonePlan,
    copied: Copied,
    source: SourceFacts,
    post: PostData,
    log: Callable[[str], None],
    early: EarlyChecks,
) -> dict[str, Any]:
    """Post-data (foreign keys, ...) restores while the last row counts and leak scans
    finish (they need no index); then the rest."""

    def restore_rest() -> float:
        t = time.monotonic()
        post.restore_rest(pool.jobs)
        return time.monotonic() - t

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clone-post") as background:
        rest = background.submit(restore_rest)
        try:
            results = early.results(plan.tables)
            pool.drain(log)
        finally:
            wait([rest])
        scan_s = time.monotonic() - t0
        log(f"foreign keys and remaining post-data restored in {rest.result():.1f}s")

    with pg.connect(pool.target_url, autocommit=True, secrets=pool.secrets) as target:
        pg.set_sequences(conn=target, sequences=source.sequences)
        for schema, name, populated in source.matviews:
            if populated:  # computed from the masked tables of the clone
                pg.refresh_matview(conn=target, schema=schema, name=name)
        target_fks = pg.list_foreign_keys(target)
    refreshed = sum(1 for m in source.matviews if m[2])
    log(f"{len(source.sequences)} sequences set; {refreshed} materialized views refreshed")

    # Foreign keys: PostgreSQL validated each one when post-data added it; check that
    # all of them are there and validated (NOT VALID ones stay as in the source).
    source_fks = source.foreign_keys
    fk_problems = [
        f"{s}.{t}.{n} missing" for (s, t, n) in source_fks if (s, t, n) not in target_fks
    ] + [
        f"{s}.{t}.{n} not validated"
        for (s, t, n), ok in target_fks.items()
        if not ok and source_fks.get((s, t, n), False)
    ]
    mismatches = {
        p.name: (copied.rows[p.name], n)
        for p, (n, _) in zip(plan.tables, results, strict=True)
        if copied.rows[p.name] != n
    }
    leaks = {
        f"{p.name}.{column}": n
        for p, (_, found) in zip(plan.tables, results, strict=True)
        for column, n in found.items()
        if n
    }
    scanned = sum(len(found) for _, found in results)
    log(
        f"checks: {len(plan.tables)} row counts ({len(mismatches)} differ), "
        f"{len(target_fks)} foreign keys ({len(fk_problems)} problems), "
        f"{scanned} masked columns scanned for leaks ({len(leaks)} with leaks) in {scan_s:.1f}s"
    )
    return {
        "row_counts_match": not mismatches,
        "count_mismatches": mismatches,
        "foreign_keys": len(target_fks),
        "foreign_key_problems": fk_problems,
        "masked_columns_scanned": scanned,
        "leaks": leaks,
        "sequences_set": len(source.sequences),
    }


def _shape(rule: Rule, ctype: ColumnType) -> pg.ShapeCheck:
    value = text_value(rule.column)
    return pg.ShapeCheck(value=value, producible=producible(rule=rule, col=ctype, value=value))


def check_table(
    *,
    src: psycopg.Connection[Any],
    tgt: psycopg.Connection[Any],
    table: TablePlan,
    collected: Collected,
) -> tuple[int, dict[str, int]]:
    """(rows in the clone, leaked values per masked column) for one table.

    Constant transformers (null, fixed, redact): every clone value must be the
    constant; counted with the row count in one scan. Deterministic ones: the
    source's distinct values gathered while streaming are held in this process's
    memory only, and the clone's values are streamed against them, batch by batch,
    with C-level set intersections; a hit is a leak unless the transformer could
    have produced the value (see masking.could_produce). Columns not gathered
    (masked by the source's server, or too many values): the clone's values that
    the transformer could not have produced are the candidates (counted in the row
    count's scan, listed only when there are some). Candidates are
    confirmed on the source, in the same snapshot.
    """
    schema, name = table.table.schema, table.table.name
    constants: list[tuple[str, pg.ConstantCheck]] = []
    hashed: list[tuple[Rule, ColumnType]] = []
    for rule, ctype in table.rules:
        if rule.transformer == "null" or (rule.transformer == "fixed" and rule.value is None):
            constants.append((rule.column, pg.ConstantCheck(rule.column, None, ctype.type_sql)))
        elif rule.transformer == "fixed":
            check = pg.ConstantCheck(rule.column, rule.value, ctype.type_sql)
            constants.append((rule.column, check))
        elif rule.transformer == "redact":
            marker = Masker(b"\0" * 16).mask(rule=rule, value="x", col=ctype)
            check = pg.ConstantCheck(rule.column, marker, ctype.type_sql, null_ok=True)
            constants.append((rule.column, check))
        elif rule.transformer in DETERMINISTIC:
            hashed.append((rule, ctype))
    # Not gathered (masked in the source, or too many distinct values): a leak is a
    # clone value masking could not have produced that is in the source. The same scan
    # as the row count counts such values; only a column that has some lists them.
    missing = [
        i for i, (r, _) in enumerate(hashed) if collected.get((table.name, r.column)) is None
    ]
    shapes = [_shape(*hashed[i]) for i in missing]
    rows, violations, outside = pg.table_checks(
        conn=tgt, schema=schema, table=name, checks=[c for _, c in constants], shapes=shapes
    )
    found = {column: n for (column, _), n in zip(constants, violations, strict=True)}
    if not hashed:
        return rows, found

    sources: list[set[Any]] = []  # bytes (and None, harmless, when read again)
    for rule, ctype in hashed:
        seen = collected.get((table.name, rule.column))
        if seen is None:
            sources.append(set())
        elif ctype.base_type == "bpchar":  # ::text drops char(n)'s trailing blanks
            sources.append({unescape_field(f).rstrip(b" ") for f in seen if f != NULL_FIELD})
        else:
            # Gathered fields are COPY-escaped: a value without special characters is
            # its own field; the few with escapes are added decoded.
            escaped = b"\\" in b"\n".join(seen)  # rare: avoid a Python loop when absent
            sources.append(seen)
            if escaped:
                seen.update([unescape_field(f) for f in seen if b"\\" in f])
    candidates: list[set[str]] = [set() for _ in hashed]
    for i, shape, count in zip(missing, shapes, outside, strict=True):
        # The clone's server lists the values of another shape; the source confirms.
        if count == 0:
            continue
        rule, ctype = hashed[i]
        listed = pg.values_outside(
            conn=tgt, schema=schema, table=name, shape=shape, limit=LEAK_CANDIDATES_MAX
        )
        candidates[i] = {v for v in listed if not could_produce(rule=rule, value=v, col=ctype)}
    for i, (rule, ctype) in enumerate(hashed):
        if i in missing:
            continue
        for values in pg.column_value_batches(
            conn=tgt, schema=schema, table=name, column=rule.column
        ):
            for hit in sources[i].intersection(values):
                if hit is not None:
                    text = hit.decode()
                    if not could_produce(rule=rule, value=text, col=ctype):
                        candidates[i].add(text)
            if len(candidates[i]) >= LEAK_CANDIDATES_MAX:
                break
    for i, (rule, _) in enumerate(hashed):
        # Confirm on the source (a hit can be spurious: an escaped field that equals
        # another raw value).
        suspects = sorted(candidates[i])
        found[rule.column] = (
            len(
                pg.values_present(
                    conn=src, schema=schema, table=name, column=rule.column, values=suspects
                )
            )
            if suspects
            else 0
        )
    return rows, found
