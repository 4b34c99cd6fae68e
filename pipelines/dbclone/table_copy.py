"""The data of a logical clone: one COPY stream per table, ``jobs`` at once, masked by
the source's server (or in the stream), and each big table's indexes built as soon as
it is copied."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from pipelines.clients import postgres as pg
from pipelines.dbclone.clone_plan import ClonePlan, TablePlan, row_masker
from pipelines.dbclone.masking import Masker
from pipelines.dbclone.sql_masking import masked_select

PROGRESS_EVERY_S = 10.0

T = TypeVar("T")


class CopyPool:
    """``jobs`` worker threads, each with its own source and target connection.

    Log lines from workers are queued and handed to ``log`` on the calling thread
    (the caller's logger may write to the portal's database). If ``log`` raises,
    the workers are told to stop and the exception propagates.
    """

    def __init__(
        self, *, jobs: int, source_url: str, target_url: str, snapshot: str, secrets_: list[str]
    ) -> None:
        self.jobs = jobs
        self.source_url = source_url
        self.target_url = target_url
        self.snapshot = snapshot
        self.secrets = secrets_
        self.stop = threading.Event()
        self.messages: queue.Queue[str] = queue.Queue()
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def connections(self) -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            src = pg.connect(self.source_url, autocommit=True, secrets=self.secrets)
            with self._lock:
                self._opened.append(src)
            pg.import_snapshot(conn=src, snapshot=self.snapshot)
            tgt = pg.connect(self.target_url, autocommit=True, secrets=self.secrets)
            with self._lock:
                self._opened.append(tgt)
            for conn in (src, tgt):
                # Their scans (checks, the stream path) run beside copies that keep every
                # core busy: parallel workers would only add processes.
                pg.no_parallel_workers(conn)
            conns = self._local.conns = (src, tgt)
        return conns

    def run(
        self, *, items: Sequence[T], work: Callable[[T], Any], log: Callable[[str], None]
    ) -> list[Any]:
        results: list[Any] = [None] * len(items)
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="clone") as ex:
            futures: dict[Future[Any], int] = {
                ex.submit(self._guard, work, item): i for i, item in enumerate(items)
            }
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    self.drain(log)
                    for future in done:
                        results[futures[future]] = future.result()  # re-raises worker errors
                self.drain(log)
            except BaseException:
                self.stop.set()
                for future in pending:
                    future.cancel()
                raise
        return results

    def _guard(self, work: Callable[[T], Any], item: T) -> Any:  # a submit() target
        if self.stop.is_set():
            raise pg.CopyCancelled("cancelled")
        return work(item)

    def drain(self, log: Callable[[str], None]) -> None:
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return
            log(message)

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                with contextlib.suppress(Exception):  # closing is best effort
                    conn.close()
            self._opened.clear()


Collected = dict[tuple[str, str], set[bytes] | None]


@dataclass(frozen=True)
class Copied:
    """What the copy did: rows per table, and the source values seen per masked column."""

    rows: dict[str, int]
    collected: Collected


# Below this size a table's indexes wait for the final post-data restore (one
# pg_restore process per table would cost more than it saves).
EARLY_INDEX_MIN_BYTES = 4 * 1024 * 1024


@dataclass(kw_only=True)
class PostData:
    """Post-data in two parts: a big table's own indexes and unique/primary keys are
    built right after its copy (while other tables still copy), the rest (foreign
    keys, triggers, partition indexes, small tables' indexes) at the end. A foreign key
    between plain tables that references a big table (its key is built by then) is
    added by the clone itself, validated beside the others (``pg.add_foreign_keys``);
    pg_restore would add such keys one after another."""

    archive: Path
    target_url: str
    role: str
    early: dict[int, list[pg.TocEntry]]  # table oid -> entries
    foreign_keys: list[pg.ForeignKey]
    rest: list[pg.TocEntry]

    @classmethod
    def plan(
        cls,
        *,
        archive: Path,
        target_url: str,
        role: str,
        plan: ClonePlan,
        owners: dict[tuple[int, int], int],
        foreign_keys: Sequence[pg.ForeignKey],
    ) -> PostData:
        big = {p.table.oid for p in plan.tables if p.table.size >= EARLY_INDEX_MIN_BYTES}
        ours = {key.oid: key for key in foreign_keys if key.referenced in big}
        early: dict[int, list[pg.TocEntry]] = {}
        added: list[pg.ForeignKey] = []
        rest: list[pg.TocEntry] = []
        for entry in pg.list_archive(archive, "post-data"):
            kind = entry.desc.split(" ", 1)[0]
            table = owners.get((entry.catalog_oid, entry.object_oid))
            if entry.desc.startswith("FK CONSTRAINT") and entry.object_oid in ours:
                added.append(ours[entry.object_oid])
            elif (
                kind in ("INDEX", "CONSTRAINT")
                and table in big
                and not entry.desc.startswith("INDEX ATTACH")
            ):
                early.setdefault(table, []).append(entry)
            else:
                rest.append(entry)
        return cls(
            archive=archive,
            target_url=target_url,
            role=role,
            early=early,
            foreign_keys=added,
            rest=rest,
        )

    def restore_table(self, table_oid: int) -> int:
        entries = self.early.get(table_oid, [])
        if entries:
            pg.restore_entries(
                url=self.target_url, path=self.archive, entries=entries, role=self.role
            )
        return len(entries)

    def restore_rest(self, jobs: int) -> None:
        # The keys first: comments on them are among the rest.
        if self.foreign_keys:
            pg.add_foreign_keys(
                url=self.target_url, role=self.role, keys=self.foreign_keys, jobs=jobs
            )
        if self.rest:
            pg.restore_entries(
                url=self.target_url,
                path=self.archive,
                entries=self.rest,
                role=self.role,
                jobs=jobs,
            )


def copy_tables(
    *,
    pool: CopyPool,
    plan: ClonePlan,
    masker: Masker,
    post: PostData,
    log: Callable[[str], None],
    text_only: frozenset[int] = frozenset(),
    on_copied: Callable[[TablePlan, Collected], None] | None = None,
) -> Copied:
    """Copy every table; ``text_only``: oids of tables with a type lacking binary I/O.
    ``on_copied`` is called with each table once its rows are in (its checks can start
    while other tables copy)."""
    collected: Collected = {}

    def copy_one(table: TablePlan) -> int:
        src, tgt = pool.connections()
        sets: dict[str, set[bytes]] = {}
        transform = row_masker(masker=masker, plan=table, collect=sets)
        label = ", ".join(table.masked_columns)
        last = [time.monotonic()]
        t0 = time.monotonic()

        def progress(rows: int) -> None:
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                pool.messages.put(f"copying {table.name}: {rows} rows so far")

        # Binary COPY bytes piped from a source psql to a target psql: unmasked tables
        # untouched, masked ones masked by the source's server (only masked values
        # leave it). The Python transform remains for sessions that are not UTF-8 and
        # for types without binary input/output.
        binary = table.table.oid not in text_only and pg.utf8_session(src) and pg.utf8_session(tgt)
        schema, name, columns = table.table.schema, table.table.name, table.columns
        if binary:
            masked = masked_select(plan=table, masker=masker) if transform else None
            rows = pg.copy_table_binary(
                source_url=pool.source_url,
                target_url=pool.target_url,
                schema=schema,
                table=name,
                columns=columns,
                snapshot=pool.snapshot,
                select=masked.query if masked else None,
                session=masked.session if masked else None,
                should_cancel=pool.stop.is_set,
                secrets=pool.secrets,
            )
            if masked:
                sets.clear()  # nothing seen here: the leak scan reads the source's values
            how = f"masked in the source: {label}" if masked else "unmasked"
        else:
            rows = pg.copy_table(
                source=src,
                target=tgt,
                schema=schema,
                table=name,
                columns=columns,
                transform=transform,
                stop=pool.stop,
                progress=progress,
            )
            how = f"masked: {label}" if transform else "unmasked"
        for column, seen in sets.items():
            complete = transform is not None and table.columns.index(column) not in (
                transform.overflowed
            )
            collected[(table.name, column)] = seen if complete else None
        pool.messages.put(
            f"copied {table.name}: {rows} rows in {time.monotonic() - t0:.1f}s ({how})"
        )
        if on_copied is not None:
            on_copied(table, collected)
        if post.early.get(table.table.oid):
            builds.append(builder.submit(build, table))
        return rows

    def build(table: TablePlan) -> None:
        if pool.stop.is_set():
            return
        t1 = time.monotonic()
        built = post.restore_table(table.table.oid)
        pool.messages.put(
            f"built {built} indexes and keys of {table.name} in {time.monotonic() - t1:.1f}s"
        )

    # Index builds run on threads of their own, as many as copy workers (the server
    # does the work), so the copy workers go straight on to the next table.
    builds: list[Future[None]] = []
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=pool.jobs, thread_name_prefix="clone-index") as builder:
        counts = pool.run(items=plan.tables, work=copy_one, log=log)  # sets pool.stop on error
        while not all(b.done() for b in builds):
            wait(builds, timeout=0.2)
            pool.drain(log)
        pool.drain(log)
        for b in builds:
            b.result()  # re-raise a failed build
    total = sum(counts)
    log(f"data copied: {total} rows in {len(counts)} tables in {time.monotonic() - t0:.1f}s")
    rows = {p.name: n for p, n in zip(plan.tables, counts, strict=True)}
    return Copied(rows=rows, collected=collected)
