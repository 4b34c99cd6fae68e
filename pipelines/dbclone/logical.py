"""The ``postgres_logical`` clone driver: schema, masked COPY streams, checks.

Steps (each safe to rerun; the clone's names are derived from the run id):

1. Read the source catalog and check every masking rule against it: a rule on a
   missing table or column, or whose output cannot fit the column, fails here,
   before anything is created on the target.
2. On the target server: a login role with a generated password (hashed
   client-side) and a new database owned by it. A leftover from a killed
   attempt of the same run is dropped first.
3. Pre-data schema (``pg_dump --schema-only``, restored section by section),
   then the data: one COPY stream per table, ``jobs`` tables at once (threads, a
   source and a target connection each), masked columns rewritten in the stream,
   every reader in the same exported snapshot. A big table's own indexes and
   primary/unique keys are built as soon as it is copied, while others copy.
4. The rest of post-data (foreign keys, which PostgreSQL validates as it adds
   them, triggers, small tables' indexes) in the background while row counts and
   the leak scan read the tables; sequences set to the source's values;
   materialized views refreshed from the masked data.
5. Checks: row counts per table, foreign keys present and validated, and a leak
   scan proving no source value of a masked column is in the clone. Only then
   is the database marked complete. A leak drops the clone at once.

This module does not touch Django models; all SQL lives in pipelines.clients.postgres.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from pipelines.clients import postgres as pg
from pipelines.dbclone.masking import (
    NULL_FIELD,
    ColumnType,
    Masker,
    MaskingError,
    RowMasker,
    Rule,
    check_rule,
    could_produce,
    looks_personal,
    parse_rules,
    unescape_field,
)
from portal.errors import PortalError

DRIVER = "postgres_logical"
ROLE_SUFFIX = "_owner"
MAX_IDENTIFIER = 63
# Marker comments: the role's says which database it was made for (set in the same
# transaction as CREATE ROLE), the database's says whether the clone finished.
ROLE_MARKER = "portal-clone role for database {database}"
DB_INCOMPLETE = "portal-clone: incomplete"
DB_COMPLETE = "portal-clone: complete"
LEAK_CANDIDATES_MAX = 1000
PROGRESS_EVERY_S = 10.0

T = TypeVar("T")


class CloneError(PortalError):
    """The clone failed. The message names what went wrong and never holds a secret."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)


@dataclass(frozen=True)
class LogicalCloneSpec:
    """One database of a blueprint: ``driver: postgres_logical``."""

    source: str  # connection names: settings.PORTAL_CONNECTIONS
    target: str
    masking: Mapping[str, Any] = field(default_factory=dict)
    masking_strict: bool = False
    jobs: int = 2

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LogicalCloneSpec:
        unknown = set(data) - {"driver", "source", "target", "masking", "masking_strict", "jobs"}
        if unknown:
            raise CloneError(f"unknown database settings: {sorted(unknown)}", retryable=False)
        if data.get("driver", DRIVER) != DRIVER:
            raise CloneError(f"driver {data.get('driver')!r} is not {DRIVER}", retryable=False)
        try:
            jobs = int(data.get("jobs", 2))
        except (TypeError, ValueError):
            raise CloneError("jobs must be a whole number", retryable=False) from None
        if not 1 <= jobs <= 32:
            raise CloneError("jobs must be between 1 and 32", retryable=False)
        masking = data.get("masking") or {}
        if not isinstance(masking, Mapping):
            raise CloneError("masking must be a mapping of 'table.column': rule", retryable=False)
        for key in ("source", "target"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise CloneError(f"{key} must name a connection", retryable=False)
        return cls(
            source=data["source"],
            target=data["target"],
            masking=dict(masking),
            masking_strict=bool(data.get("masking_strict", False)),
            jobs=jobs,
        )


@dataclass
class CloneResult:
    database: str
    role: str
    password: str = field(repr=False)  # the caller stores it encrypted; never log it
    host: str
    port: int
    table_counts: dict[str, int]
    warnings: list[str]
    checks: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # a complete clone of this run existed: only the password is new

    def outputs(self) -> dict[str, Any]:
        """JSON-safe summary without the password (for stage outputs and pages)."""
        return {
            "database": self.database,
            "role": self.role,
            "host": self.host,
            "port": self.port,
            "table_counts": dict(self.table_counts),
            "warnings": list(self.warnings),
            "checks": dict(self.checks),
            "reused": self.reused,
        }


# --- names ------------------------------------------------------------------------------


def _ident(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_")


def clone_database_name(*, account: str, service: str, run_id: str | int) -> str:
    """``<account>_<service>_<short run id>``, a valid lower-case identifier.

    Leaves room for the role suffix; when the name is too long the
    account/service part is shortened and a digest of it keeps names distinct.
    """
    short = re.sub(r"[^a-z0-9]", "", str(run_id).lower())
    if len(short) > 12:
        short = short[:8]  # UUID-like ids: their first 8 characters
    if not short:
        raise CloneError(f"run id {run_id!r} has no letters or digits", retryable=False)
    prefix = _ident(f"{account}_{service}") or "clone"
    if not prefix[0].isalpha():
        prefix = "c_" + prefix
    limit = MAX_IDENTIFIER - len(ROLE_SUFFIX)
    name = f"{prefix}_{short}"
    if len(name) > limit:
        digest = hashlib.sha256(prefix.encode()).hexdigest()[:6]
        keep = limit - len(short) - len(digest) - 2
        name = f"{prefix[:keep].rstrip('_')}_{digest}_{short}"
    return name


def clone_role_name(database: str) -> str:
    return database + ROLE_SUFFIX


# --- planning ---------------------------------------------------------------------------


@dataclass
class TablePlan:
    table: pg.TableInfo
    columns: list[str]  # copied columns (generated ones are computed by the target)
    rules: list[tuple[Rule, ColumnType]]  # masked columns of this table

    @property
    def name(self) -> str:
        return self.table.qualified


@dataclass
class ClonePlan:
    tables: list[TablePlan]
    warnings: list[str]


def _column_type(*, table: pg.TableInfo, column: pg.ColumnInfo) -> ColumnType:
    return ColumnType(
        type_sql=column.type_sql,
        base_type=column.base_type,
        max_length=column.max_length,
        numeric_digits=column.numeric_digits,
        not_null=column.not_null,
        unique_alone=column.name in table.unique_alone,
    )


def plan_clone(
    *,
    tables: Sequence[pg.TableInfo],
    rules: Sequence[Rule],
    strict: bool,
    check_fixed: Callable[[str, str], str | None] | None = None,
) -> ClonePlan:
    """Match rules to the source catalog; raise MaskingError naming every bad rule."""
    by_name = {(t.schema, t.name): t for t in tables}
    errors: list[str] = []
    applied: dict[int, list[tuple[Rule, ColumnType]]] = {t.oid: [] for t in tables}
    ruled: set[tuple[str, str, str]] = set()
    for rule in rules:
        table = by_name.get((rule.schema, rule.table))
        if table is None:
            errors.append(f"masking rule {rule.key!r}: table {rule.table_name} does not exist")
            continue
        column = table.column(rule.column)
        if column is None:
            errors.append(
                f"masking rule {rule.key!r}: column {rule.column!r} does not exist in "
                f"{rule.table_name}"
            )
            continue
        if column.generated and rule.transformer != "keep":
            errors.append(
                f"masking rule {rule.key!r}: {rule.column!r} is a generated column; mask the "
                "columns it is computed from"
            )
            continue
        ctype = _column_type(table=table, column=column)
        try:
            check_rule(rule=rule, col=ctype)
        except MaskingError as exc:
            errors.append(str(exc))
            continue
        if rule.transformer == "fixed" and rule.value is not None and check_fixed:
            problem = check_fixed(rule.value, column.type_sql)
            if problem:
                errors.append(f"masking rule {rule.key!r}: fixed value is invalid: {problem}")
                continue
        ruled.add((rule.schema, rule.table, rule.column))
        # A rule on a partitioned table applies to all its partitions.
        for candidate in tables:
            if (candidate.schema, candidate.name) == (rule.schema, rule.table) or (
                (candidate.root_schema, candidate.root_name) == (rule.schema, rule.table)
            ):
                target_col = candidate.column(rule.column)
                if target_col is not None:
                    applied[candidate.oid].append(
                        (rule, _column_type(table=candidate, column=target_col))
                    )
    if errors:
        raise MaskingError("; ".join(errors))

    warnings: list[str] = []
    plans: list[TablePlan] = []
    for table in tables:
        if table.kind == "p":
            continue  # partitioned tables hold no rows; their partitions are copied
        # Masked columns first: the COPY column lists (same on both sides) then let the
        # row masker split a row only up to its last masked field.
        masked_names = [r.column for r, _ in applied[table.oid] if r.transformer != "keep"]
        copied = [c.name for c in table.columns if not c.generated and c.name in masked_names]
        copied += [c.name for c in table.columns if not c.generated and c.name not in copied]
        for column in table.columns:
            keys = {
                (table.schema, table.name, column.name),
                (table.root_schema, table.root_name, column.name),
            }
            if looks_personal(column.name) and not keys & ruled and not column.generated:
                warnings.append(
                    f"{table.qualified}.{column.name} looks like personal data and has no "
                    "masking rule (add one, or 'keep')"
                )
        # Dedupe: a rule on the partition itself wins over its parent's.
        rules_by_col: dict[str, tuple[Rule, ColumnType]] = {}
        for rule, ctype in applied[table.oid]:
            own = (rule.schema, rule.table) == (table.schema, table.name)
            if own or rule.column not in rules_by_col:
                rules_by_col[rule.column] = (rule, ctype)
        plans.append(TablePlan(table, copied, list(rules_by_col.values())))
    if strict and warnings:
        raise MaskingError("masking_strict: " + "; ".join(warnings))
    # Biggest first: the longest copies start early and the pool ends together.
    plans.sort(key=lambda p: p.table.size, reverse=True)
    return ClonePlan(plans, warnings)


DETERMINISTIC = ("email", "name", "phone", "hash")


def row_masker(
    *, masker: Masker, plan: TablePlan, collect: dict[str, set[bytes]] | None = None
) -> RowMasker | None:
    """The row transform of a table, or None for the raw fast path.

    With ``collect``, the distinct source fields of each deterministic masked column
    are gathered into ``collect[column]`` while streaming (for the leak scan).
    """
    transforms = []
    sets: dict[int, set[bytes]] = {}
    for rule, ctype in plan.rules:
        if rule.transformer == "keep":
            continue
        index = plan.columns.index(rule.column)
        transforms.append((index, masker.field_transform(rule=rule, col=ctype)))
        if collect is not None and rule.transformer in DETERMINISTIC:
            sets[index] = collect.setdefault(rule.column, set())
    if not transforms:
        return None
    return RowMasker(transforms=transforms, collect=sets, width=len(plan.columns))


# --- the driver -------------------------------------------------------------------------


class _Pool:
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


def clone_logical(
    *,
    spec: LogicalCloneSpec | Mapping[str, Any],
    account: str,
    service: str,
    run_id: str | int,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
    masking_key: bytes | None = None,
) -> CloneResult:
    """Clone the source database into a new, masked database on the target server.

    ``masking_key`` defaults to a fresh random per-clone secret (pass one to get
    the same masked values across clones). Raises CloneError.
    """
    if not isinstance(spec, LogicalCloneSpec):
        spec = LogicalCloneSpec.from_mapping(spec)
    database = clone_database_name(account=account, service=service, run_id=run_id)
    try:
        return _clone(
            spec=spec,
            database=database,
            log=log,
            add_secret=add_secret,
            masking_key=masking_key or secrets.token_bytes(32),
        )
    except MaskingError as exc:
        raise CloneError(str(exc), retryable=False) from None
    except pg.ConnectionNotConfigured as exc:
        raise CloneError(str(exc), retryable=False) from None
    except pg.PostgresError as exc:
        raise CloneError(str(exc), retryable=True) from None


@dataclass(frozen=True)
class _CloneTarget:
    """The clone's names and where it lives."""

    database: str
    role: str
    url: str  # the clone database, as the target server's admin
    where: pg.Endpoint


@dataclass(frozen=True)
class _SourceFacts:
    """What the clone must reproduce besides the rows, read in the source's snapshot."""

    sequences: list[tuple[str, str, int | None]]
    foreign_keys: dict[tuple[str, str, str], bool]
    matviews: list[tuple[str, str, bool]]


Collected = dict[tuple[str, str], set[bytes] | None]


@dataclass(frozen=True)
class _Copied:
    """What the copy did: rows per table, and the source values seen per masked column."""

    rows: dict[str, int]
    collected: Collected


def _clone(
    *,
    spec: LogicalCloneSpec,
    database: str,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
    masking_key: bytes,
) -> CloneResult:
    started = time.monotonic()
    source_url = pg.connection_url(spec.source)
    target_admin_url = pg.connection_url(spec.target)
    url_secrets = [s for s in (pg.url_password(source_url), pg.url_password(target_admin_url)) if s]
    target = _CloneTarget(
        database=database,
        role=clone_role_name(database),
        url=pg.with_dbname(target_admin_url, database),
        where=pg.endpoint(target_admin_url),
    )
    role = target.role
    rules = parse_rules(spec.masking)

    with (
        pg.connect(source_url, autocommit=True, secrets=url_secrets) as source,
        pg.connect(target_admin_url, autocommit=True, secrets=url_secrets) as admin,
    ):
        # Everything reads one snapshot of the source: the catalog checked here, the
        # schema dump, every table's copy and the leak scan's second look at it.
        snapshot = pg.export_snapshot(source)

        # 1. Validate against the source before anything exists on the target.
        plan = plan_clone(
            tables=pg.list_tables(source),
            rules=rules,
            strict=spec.masking_strict,
            check_fixed=lambda value, type_sql: pg.check_cast(
                conn=source, value=value, type_sql=type_sql
            ),
        )
        warnings = list(plan.warnings)
        if pg.count_large_objects(source):
            warnings.append("large objects are not cloned by postgres_logical")
        for warning in warnings:
            log(f"warning: {warning}")
        masked = sum(len(p.rules) for p in plan.tables)
        log(
            f"source has {len(plan.tables)} tables; {masked} masked columns; clone database "
            f"{database} on {target.where.host}:{target.where.port}"
        )

        # 2. One clone per run at a time; a leftover of a killed attempt goes first.
        if not pg.try_advisory_lock(conn=admin, key=f"portal-clone:{database}"):
            raise CloneError(f"another clone into {database} is running", retryable=True)
        state = pg.clone_state(conn=admin, database=database, role=role)
        _check_ownership(state=state, database=database, role=role)
        if state.database_exists and state.database_comment == DB_COMPLETE:
            return _reuse_complete(
                admin=admin,
                target=target,
                plan=plan,
                warnings=warnings,
                log=log,
                add_secret=add_secret,
            )
        if state.database_exists or state.role_exists:
            log(f"removing the incomplete clone {database} left by an earlier attempt")
            pg.drop_database(conn=admin, database=database)
            pg.drop_role(conn=admin, role=role)

        password = secrets.token_urlsafe(32)
        add_secret(password)  # before anything could log it
        pg.create_login_role(
            conn=admin, role=role, password=password, comment=ROLE_MARKER.format(database=database)
        )
        pg.create_database(
            conn=admin, database=database, owner=role, settings=pg.database_settings(source)
        )
        pg.comment_database(conn=admin, database=database, comment=DB_INCOMPLETE)
        log(f"created database {database} owned by role {role}")

        # 3. Schema, data, post-data.
        facts = _SourceFacts(
            sequences=pg.list_sequences(source),
            foreign_keys=pg.list_foreign_keys(source),
            matviews=pg.list_matviews(source),
        )
        with tempfile.TemporaryDirectory(prefix="portal-clone-") as tmp:
            archive = Path(tmp) / "schema.dump"
            pg.dump_schema(source_url, archive, snapshot)
            pg.restore_section(target.url, archive, "pre-data", role)
            log("schema restored (pre-data)")
            post = _PostData.plan(
                archive=archive,
                target_url=target.url,
                role=role,
                plan=plan,
                owners=pg.table_objects(source),
            )
            pool = _Pool(
                jobs=spec.jobs,
                source_url=source_url,
                target_url=target.url,
                snapshot=snapshot,
                secrets_=url_secrets,
            )
            try:
                copied = _copy_tables(
                    pool=pool, plan=plan, masker=Masker(masking_key), post=post, log=log
                )
                checks = _finish_and_check(
                    pool=pool, plan=plan, copied=copied, source=facts, post=post, log=log
                )
            finally:
                pool.close()

        if checks["leaks"]:
            # Personal data reached the clone: remove it now, do not leave it for a retry.
            pg.drop_database(conn=admin, database=database)
            pg.drop_role(conn=admin, role=role)
            raise CloneError(
                "leak scan failed, clone dropped: source values found in "
                + ", ".join(f"{col} ({n})" for col, n in checks["leaks"].items()),
                retryable=False,
            )
        if checks["count_mismatches"]:
            raise CloneError(
                "row counts differ: "
                + ", ".join(
                    f"{t} source {s} target {d}" for t, (s, d) in checks["count_mismatches"].items()
                ),
                retryable=True,
            )
        if checks["foreign_key_problems"]:
            raise CloneError(
                "foreign keys not valid in the clone: " + ", ".join(checks["foreign_key_problems"]),
                retryable=True,
            )
        pg.comment_database(conn=admin, database=database, comment=DB_COMPLETE)
        checks["elapsed_s"] = round(time.monotonic() - started, 3)
        log(f"clone {database} complete in {checks['elapsed_s']}s")
        return CloneResult(
            database=database,
            role=role,
            password=password,
            host=target.where.host,
            port=target.where.port,
            table_counts=dict(copied.rows),
            warnings=warnings,
            checks=checks,
        )


def _check_ownership(*, state: pg.CloneState, database: str, role: str) -> None:
    marker = ROLE_MARKER.format(database=database)
    if state.role_exists and state.role_comment != marker:
        raise CloneError(
            f"role {role} exists and was not created by the clone driver", retryable=False
        )
    if state.database_exists and (state.database_owner != role or state.role_comment != marker):
        raise CloneError(
            f"database {database} exists and was not created by the clone driver", retryable=False
        )


def _reuse_complete(
    *,
    admin: psycopg.Connection[Any],
    target: _CloneTarget,
    plan: ClonePlan,
    warnings: list[str],
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
) -> CloneResult:
    """An earlier attempt finished: the password it returned may be lost, so set a new one."""
    password = secrets.token_urlsafe(32)
    add_secret(password)
    pg.set_role_password(conn=admin, role=target.role, password=password)
    with pg.connect(target.url, autocommit=True) as conn:
        counts = {
            p.name: pg.count_rows(conn=conn, schema=p.table.schema, table=p.table.name)
            for p in plan.tables
        }
    log(f"clone {target.database} was already complete; its role got a new password")
    return CloneResult(
        database=target.database,
        role=target.role,
        password=password,
        host=target.where.host,
        port=target.where.port,
        table_counts=counts,
        warnings=warnings,
        reused=True,
    )


# Below this size a table's indexes wait for the final post-data restore (one
# pg_restore process per table would cost more than it saves).
EARLY_INDEX_MIN_BYTES = 4 * 1024 * 1024


@dataclass(kw_only=True)
class _PostData:
    """Post-data in two parts: a big table's own indexes and unique/primary keys are
    built right after its copy (while other tables still copy), the rest (foreign
    keys, triggers, partition indexes, small tables' indexes) at the end."""

    archive: Path
    target_url: str
    role: str
    early: dict[int, list[pg.TocEntry]]  # table oid -> entries
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
    ) -> _PostData:
        big = {p.table.oid for p in plan.tables if p.table.size >= EARLY_INDEX_MIN_BYTES}
        early: dict[int, list[pg.TocEntry]] = {}
        rest: list[pg.TocEntry] = []
        for entry in pg.list_archive(archive, "post-data"):
            kind = entry.desc.split(" ", 1)[0]
            table = owners.get((entry.catalog_oid, entry.object_oid))
            if (
                kind in ("INDEX", "CONSTRAINT")
                and table in big
                and not entry.desc.startswith("INDEX ATTACH")
            ):
                early.setdefault(table, []).append(entry)
            else:
                rest.append(entry)
        return cls(archive=archive, target_url=target_url, role=role, early=early, rest=rest)

    def restore_table(self, table_oid: int) -> int:
        entries = self.early.get(table_oid, [])
        if entries:
            pg.restore_entries(self.target_url, self.archive, entries, self.role)
        return len(entries)

    def restore_rest(self, jobs: int) -> None:
        if self.rest:
            pg.restore_entries(self.target_url, self.archive, self.rest, self.role, jobs)


def _copy_tables(
    *, pool: _Pool, plan: ClonePlan, masker: Masker, post: _PostData, log: Callable[[str], None]
) -> _Copied:
    collected: Collected = {}

    def copy_one(table: TablePlan) -> int:
        src, tgt = pool.connections()
        sets: dict[str, set[bytes]] = {}
        transform = row_masker(masker=masker, plan=table, collect=sets)
        label = ", ".join(r.column for r, _ in table.rules if r.transformer != "keep")
        last = [time.monotonic()]
        t0 = time.monotonic()

        def progress(rows: int) -> None:
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                pool.messages.put(f"copying {table.name}: {rows} rows so far")

        rows = pg.copy_table(
            source=src,
            target=tgt,
            schema=table.table.schema,
            table=table.table.name,
            columns=table.columns,
            transform=transform,
            stop=pool.stop,
            progress=progress,
        )
        for column, seen in sets.items():
            complete = transform is not None and table.columns.index(column) not in (
                transform.overflowed
            )
            collected[(table.name, column)] = seen if complete else None
        how = f"masked: {label}" if transform else "unmasked"
        pool.messages.put(
            f"copied {table.name}: {rows} rows in {time.monotonic() - t0:.1f}s ({how})"
        )
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

    # Index builds run on their own thread (the server does the work), so the copy
    # workers go straight on to the next table.
    builds: list[Future[None]] = []
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clone-index") as builder:
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
    return _Copied(rows=rows, collected=collected)


def _finish_and_check(
    *,
    pool: _Pool,
    plan: ClonePlan,
    copied: _Copied,
    source: _SourceFacts,
    post: _PostData,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Post-data (foreign keys, ...) restores in the background while the row counts
    and the leak scan read the tables (they need no index); then the rest."""

    def check(table: TablePlan) -> tuple[int, dict[str, int]]:
        src, tgt = pool.connections()
        return _check_table(src=src, tgt=tgt, table=table, collected=copied.collected)

    def restore_rest() -> float:
        t = time.monotonic()
        post.restore_rest(pool.jobs)
        return time.monotonic() - t

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clone-post") as background:
        rest = background.submit(restore_rest)
        try:
            results = pool.run(items=plan.tables, work=check, log=log)
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


def _check_table(
    *,
    src: psycopg.Connection[Any],
    tgt: psycopg.Connection[Any],
    table: TablePlan,
    collected: Collected,
) -> tuple[int, dict[str, int]]:
    """(rows in the clone, leaked values per masked column) for one table.

    Constant transformers (null, fixed, redact): every clone value must be the
    constant; counted with the row count in one scan. Deterministic ones: the
    source's distinct values (gathered while streaming, else read again from the
    source, in the same snapshot) are held in this process's memory only, and the
    clone's values are streamed against them, batch by batch, with C-level set
    intersections. A hit is a leak unless the transformer could have produced the
    value (see masking.could_produce); candidates are confirmed on the source.
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
    rows, violations = pg.table_checks(
        conn=tgt, schema=schema, table=name, checks=[c for _, c in constants]
    )
    found = {column: n for (column, _), n in zip(constants, violations, strict=True)}
    if not hashed:
        return rows, found

    sources: list[set[Any]] = []  # bytes (and None, harmless, when read again)
    missing: list[int] = []
    for i, (rule, ctype) in enumerate(hashed):
        seen = collected.get((table.name, rule.column))
        if seen is None:
            sources.append(set())
            missing.append(i)
        elif ctype.base_type == "bpchar":  # ::text drops char(n)'s trailing blanks
            sources.append({unescape_field(f).rstrip(b" ") for f in seen if f != NULL_FIELD})
        else:
            # Gathered fields are COPY-escaped: a value without special characters is
            # its own field; the few with escapes are added decoded.
            escaped = b"\\" in b"\n".join(seen)  # rare: avoid a Python loop when absent
            sources.append(seen)
            if escaped:
                seen.update([unescape_field(f) for f in seen if b"\\" in f])
    for i in missing:  # not gathered (too many distinct values): read them again
        for values in pg.column_value_batches(
            conn=src, schema=schema, table=name, column=hashed[i][0].column
        ):
            sources[i].update(values)

    candidates: list[set[str]] = [set() for _ in hashed]
    for i, (rule, ctype) in enumerate(hashed):
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


def drop_clone(*, url: str, database: str, role: str) -> None:
    """Drop a clone's database and role (``url``: the target server's admin); idempotent.
    Refuses anything the driver did not create (the role carries a marker naming the
    database)."""
    secrets_ = [pg.url_password(url)]
    try:
        with pg.connect(url, autocommit=True, secrets=secrets_) as admin:
            state = pg.clone_state(conn=admin, database=database, role=role)
            _check_ownership(state=state, database=database, role=role)
            pg.drop_database(conn=admin, database=database)
            pg.drop_role(conn=admin, role=role)
    except pg.PostgresError as exc:
        raise CloneError(str(exc), retryable=True) from None
