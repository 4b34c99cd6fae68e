"""Golden copies: mask once, clone many.

A golden copy is a ``postgres_logical`` clone of a production database (masked, leak
scanned, scrubbed) kept on the target server as a template database. An account's
database is then ``CREATE DATABASE ... TEMPLATE golden STRATEGY FILE_COPY`` (or
``WAL_LOG``): a file copy, no masking pass, with its own login role that owns every
object in it. The build ends with a checkpoint, so a copy's own checkpoint finds
little to write.

Fail closed: a golden database is frozen as a template (comment ``GOLDEN_READY``)
only after the clone driver's checks passed (row counts, foreign keys, leak scan) and
the scrub ran; a copy is made only from a database carrying that comment.

Locks (session advisory locks on the target server's admin connection):
``portal-golden:<golden>`` is held shared by every copy and exclusively by the drop,
so a golden is never dropped mid-copy; a template takes no connections
(``ALLOW_CONNECTIONS false``), and any session found on it is ended before a copy
(PostgreSQL refuses to copy a template with other sessions). No Django models here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipelines.clients import postgres as pg
from pipelines.dbclone import logical
from pipelines.dbclone.logical import CloneError, CloneResult, LogicalCloneSpec

GOLDEN_READY = "portal-golden: ready"
GOLDEN_ACCOUNT_PREFIX = "golden_"
LOCK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class GoldenRef:
    """A ready golden copy: where it is and what it holds."""

    database: str
    role: str
    table_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GoldenBuild:
    database: str
    role: str
    taken_at: datetime  # when its source snapshot was taken (its data's age counts from here)
    table_counts: dict[str, int]
    warnings: list[str]
    checks: dict[str, object]
    scrubbed: list[str]


def golden_database_name(*, blueprint: str, service: str, build: int) -> str:
    return logical.clone_database_name(
        account=f"{GOLDEN_ACCOUNT_PREFIX}{blueprint}", service=service, run_id=build
    )


def _lock_key(golden: str) -> str:
    return f"portal-golden:{golden}"


def build_golden(
    *,
    spec: LogicalCloneSpec,
    blueprint: str,
    service: str,
    build: int,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
    scrub: Callable[[str], list[str]],
) -> GoldenBuild:
    """Clone, mask and check (``logical``), scrub (``scrub(url)`` returns the files run),
    then freeze as a template. A leftover of an earlier attempt of this build is
    dropped first. Raises CloneError; nothing is left behind that could be copied."""
    database = golden_database_name(blueprint=blueprint, service=service, build=build)
    role = logical.clone_role_name(database)
    admin_url = pg.connection_url(spec.target)
    drop_golden(url=admin_url, database=database, role=role)
    taken_at = datetime.now(UTC)  # just before the source snapshot: the age errs older
    result = logical.clone_logical(
        spec=spec,
        account=f"{GOLDEN_ACCOUNT_PREFIX}{blueprint}",
        service=service,
        run_id=build,
        log=log,
        add_secret=add_secret,
        masking_key=secrets.token_bytes(32),  # one key per golden: its copies share values
    )
    try:
        scrubbed = scrub(pg.with_dbname(admin_url, database))
        with pg.connect(admin_url, autocommit=True) as admin:
            # The golden's own database belongs to the admin, so REASSIGN OWNED in a copy
            # moves only the copy's objects; its role can no longer log in.
            pg.database_to_current_user(conn=admin, database=database)
            pg.disable_login(conn=admin, role=role)
            pg.set_template(conn=admin, database=database, template=True)
            pg.terminate_connections(conn=admin, database=database)
            pg.comment_database(conn=admin, database=database, comment=GOLDEN_READY)
            # A FILE_COPY copy starts with a checkpoint: the first one would otherwise
            # write out the pages this build left dirty.
            flushed = pg.checkpoint(admin)
    except BaseException:
        drop_golden(url=admin_url, database=database, role=role)
        raise
    log(
        f"golden copy {database} ready: {sum(result.table_counts.values())} rows, frozen"
        + ("" if flushed else " (this role may not CHECKPOINT: the first copy writes its pages)")
    )
    return GoldenBuild(
        database=database,
        role=role,
        taken_at=taken_at,
        table_counts=dict(result.table_counts),
        warnings=list(result.warnings),
        checks=dict(result.checks),
        scrubbed=scrubbed,
    )


def drop_golden(*, url: str, database: str, role: str) -> bool:
    """Drop a golden copy (waiting for copies in progress) and its role; idempotent.

    Refuses a database whose role marker does not name it. Returns False when the
    role stayed because an unfinished copy still holds objects of it.
    """
    try:
        with pg.connect(url, autocommit=True) as admin:
            state = pg.clone_state(conn=admin, database=database, role=role)
            marker = logical.ROLE_MARKER.format(database=database)
            if (state.database_exists or state.role_exists) and state.role_comment != marker:
                raise CloneError(
                    f"database {database} is not a golden copy of the clone driver",
                    retryable=False,
                )
            if not pg.advisory_lock(
                conn=admin, key=_lock_key(database), shared=False, timeout_s=LOCK_TIMEOUT_S
            ):
                raise CloneError(f"golden copy {database} is busy: copies still running")
            if state.database_exists:
                pg.set_template(conn=admin, database=database, template=False)
                pg.drop_database(conn=admin, database=database)
            try:
                pg.drop_role(conn=admin, role=role)
            except pg.PostgresError as exc:
                if exc.sqlstate != "2BP01":  # dependent objects: a copy killed mid-way
                    raise
                return False
    except pg.PostgresError as exc:
        raise CloneError(str(exc), retryable=True) from None
    return True


def copy_golden(
    *,
    target: str,
    golden: GoldenRef,
    database: str,
    log: Callable[[str], None],
    add_secret: Callable[[str], None],
    strategy: pg.CopyStrategy = pg.CopyStrategy.FILE_COPY,
) -> CloneResult:
    """A new database ``database`` (with its own login role and password) copied from
    ``golden``; idempotent like ``logical.clone_logical``. ``target``: the connection
    name of the server holding the golden copy."""
    admin_url = pg.connection_url(target)
    role = logical.clone_role_name(database)
    where = pg.endpoint(admin_url)
    secrets_ = [pg.url_password(admin_url)]
    try:
        with pg.connect(admin_url, autocommit=True, secrets=secrets_) as admin:
            if not pg.try_advisory_lock(conn=admin, key=f"portal-clone:{database}"):
                raise CloneError(f"another clone into {database} is running", retryable=True)
            state = pg.clone_state(conn=admin, database=database, role=role)
            logical.check_ownership(state=state, database=database, role=role)
            password = secrets.token_urlsafe(32)
            add_secret(password)  # before anything could log it
            if state.database_exists and state.database_comment == logical.DB_COMPLETE:
                pg.set_role_password(conn=admin, role=role, password=password)
                log(f"clone {database} was already complete; its role got a new password")
                return _result(
                    golden=golden,
                    database=database,
                    role=role,
                    password=password,
                    where=where,
                    reused=True,
                    copy_s=0.0,
                )
            if state.database_exists or state.role_exists:
                log(f"removing the incomplete clone {database} left by an earlier attempt")
                pg.drop_database(conn=admin, database=database)
                pg.drop_role(conn=admin, role=role)
            key = _lock_key(golden.database)
            if not pg.advisory_lock(conn=admin, key=key, shared=True, timeout_s=LOCK_TIMEOUT_S):
                raise CloneError(f"golden copy {golden.database} is locked", retryable=True)
            try:
                ready = pg.clone_state(conn=admin, database=golden.database, role=golden.role)
                if not (ready.database_exists and ready.database_comment == GOLDEN_READY):
                    raise CloneError(
                        f"golden copy {golden.database} is not ready (gone or unchecked)",
                        retryable=True,
                    )
                pg.create_login_role(
                    conn=admin,
                    role=role,
                    password=password,
                    comment=logical.ROLE_MARKER.format(database=database),
                )
                t0 = time.monotonic()
                pg.terminate_connections(conn=admin, database=golden.database)
                pg.create_database_from_template(
                    conn=admin,
                    database=database,
                    owner=role,
                    template=golden.database,
                    strategy=strategy,
                )
                copy_s = time.monotonic() - t0
            finally:
                pg.advisory_unlock(conn=admin, key=key, shared=True)
            pg.comment_database(conn=admin, database=database, comment=logical.DB_INCOMPLETE)
            with pg.connect(pg.with_dbname(admin_url, database), autocommit=True) as conn:
                pg.reassign_owned(conn=conn, old=golden.role, new=role)
            pg.comment_database(conn=admin, database=database, comment=logical.DB_COMPLETE)
    except pg.ConnectionNotConfigured as exc:
        raise CloneError(str(exc), retryable=False) from None
    except pg.PostgresError as exc:
        raise CloneError(str(exc), retryable=True) from None
    log(
        f"created database {database} owned by role {role} from golden copy {golden.database} "
        f"in {copy_s:.2f}s"
    )
    return _result(
        golden=golden,
        database=database,
        role=role,
        password=password,
        where=where,
        reused=False,
        copy_s=copy_s,
    )


def _result(
    *,
    golden: GoldenRef,
    database: str,
    role: str,
    password: str,
    where: pg.Endpoint,
    reused: bool,
    copy_s: float,
) -> CloneResult:
    return CloneResult(
        database=database,
        role=role,
        password=password,
        host=where.host,
        port=where.port,
        table_counts=dict(golden.table_counts),
        warnings=[],
        checks={"golden": golden.database, "copy_s": round(copy_s, 3)},
        reused=reused,
    )
