"""The ``postgres_logical`` clone driver: schema, masked COPY streams, checks.

Steps (each safe to rerun; the clone's names are derived from the run id):

1. Read the source catalog and check every masking rule against it: a rule on a
   missing table or column, or whose output cannot fit the column, fails here,
   before anything is created on the target.
2. On the target server: a login role with a generated password (hashed
   client-side) and a new database owned by it. A leftover from a killed
   attempt of the same run is dropped first.
3. Pre-data schema (``pg_dump --schema-only``, restored section by section),
   then the data: one binary COPY stream per table, piped from a source ``psql`` to a
   target ``psql`` (the bytes never pass through this process), ``jobs`` tables at
   once, every reader in the same exported snapshot. Masked columns are computed by the
   source's server (``COPY (SELECT masked ...)``, see ``sql_masking``), so only
   masked values leave it; the Python transformers rewrite a COPY text stream
   instead when a session is not UTF-8 or a type has no binary input/output. A
   big table's own indexes and primary/unique keys are built as soon as it is
   copied, while others copy.
4. The rest of post-data (foreign keys, which PostgreSQL validates: those between
   plain tables added NOT VALID, then validated at once on ``jobs`` sessions;
   triggers, small tables' indexes) in the background while row counts and the
   leak scan read the tables; sequences set to the source's values;
   materialized views refreshed from the masked data.
5. Checks: row counts per table, foreign keys present and validated, and a leak
   scan proving no source value of a masked column is in the clone. Only then
   is the database marked complete. A leak drops the clone at once.

The plan lives in ``clone_plan``, the copy in ``table_copy``, the checks in
``clone_checks``. No Django models here; all SQL lives in pipelines.clients.postgres.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pipelines.clients import postgres as pg
from pipelines.dbclone.clone_checks import EarlyChecks, SourceFacts, finish_and_check
from pipelines.dbclone.clone_plan import ClonePlan, plan_clone
from pipelines.dbclone.masking import Masker, MaskingError, parse_rules
from pipelines.dbclone.table_copy import CopyPool, PostData, copy_tables
from portal.errors import PortalError

DRIVER = "postgres_logical"
ROLE_SUFFIX = "_owner"
MAX_IDENTIFIER = 63
# Marker comments: the role's says which database it was made for (set in the same
# transaction as CREATE ROLE), the database's says whether the clone finished.
ROLE_MARKER = "portal-clone role for database {database}"
DB_INCOMPLETE = "portal-clone: incomplete"
DB_COMPLETE = "portal-clone: complete"


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


# --- the driver -------------------------------------------------------------------------


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
        # A clone's sessions commit without waiting for the WAL flush: the marker
        # "complete" is committed synchronously (admin session) at the end, and that
        # flushes all the WAL before it, so a crash can never leave a complete clone
        # with a copy missing.
        url=pg.with_settings(
            pg.with_dbname(target_admin_url, database), {"synchronous_commit": "off"}
        ),
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
        check_ownership(state=state, database=database, role=role)
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
        facts = SourceFacts(
            sequences=pg.list_sequences(source),
            foreign_keys=pg.list_foreign_keys(source),
            matviews=pg.list_matviews(source),
        )
        with tempfile.TemporaryDirectory(prefix="portal-clone-") as tmp:
            archive = Path(tmp) / "schema.dump"
            pg.dump_schema(url=source_url, path=archive, snapshot=snapshot)
            # Post-data is read from the archive while pre-data restores (two programs).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clone-pre") as pre:
                restored = pre.submit(
                    pg.restore_section, url=target.url, path=archive, section="pre-data", role=role
                )
                try:
                    post = PostData.plan(
                        archive=archive,
                        target_url=target.url,
                        role=role,
                        plan=plan,
                        owners=pg.table_objects(source),
                        foreign_keys=pg.plain_foreign_keys(source),
                    )
                finally:
                    wait([restored])
                restored.result()
            log("schema restored (pre-data)")
            pool = CopyPool(
                jobs=spec.jobs,
                source_url=source_url,
                target_url=target.url,
                snapshot=snapshot,
                secrets_=url_secrets,
            )
            early = EarlyChecks(pool=pool)
            try:
                copied = copy_tables(
                    pool=pool,
                    plan=plan,
                    masker=Masker(masking_key),
                    post=post,
                    log=log,
                    text_only=frozenset(pg.binary_copy_unsupported(source)),
                    on_copied=early.submit,
                )
                checks = finish_and_check(
                    pool=pool,
                    plan=plan,
                    copied=copied,
                    source=facts,
                    post=post,
                    log=log,
                    early=early,
                )
            finally:
                pool.stop.set()  # checks not yet started are not wanted any more
                early.close()
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


def check_ownership(*, state: pg.CloneState, database: str, role: str) -> None:
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


def drop_clone(*, url: str, database: str, role: str) -> None:
    """Drop a clone's database and role (``url``: the target server's admin); idempotent.
    Refuses anything the driver did not create (the role carries a marker naming the
    database)."""
    secrets_ = [pg.url_password(url)]
    try:
        with pg.connect(url, autocommit=True, secrets=secrets_) as admin:
            state = pg.clone_state(conn=admin, database=database, role=role)
            check_ownership(state=state, database=database, role=role)
            pg.drop_database(conn=admin, database=database)
            pg.drop_role(conn=admin, role=role)
    except pg.PostgresError as exc:
        raise CloneError(str(exc), retryable=True) from None
