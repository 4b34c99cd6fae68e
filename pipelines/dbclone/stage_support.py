"""What the db_clone and dns_cutover stages share: per-driver dispatch, parallel
workers with their own log prefix, endpoint records, scrubbing and cleanup.

An *endpoint record* is what ``Account.endpoints[service]`` holds: where the
service's database is reached now, and everything needed to delete that clone
later (driver, host, database, role, connection name, or instance id, accounts,
region, secret ARN). It never holds a password: logical clones keep theirs in
the portal's encrypted secrets (``db/<service>/<database>``), RDS clones in the
target account's Secrets Manager (only the ARN is recorded).

Test hook (documented, honoured only against a local AWS endpoint such as moto):
``PORTAL_RDS_SCRUB_URL_OVERRIDE``, a PostgreSQL URL (``{service}`` is replaced
by the service name) used for the scrub step of ``aws_rds_snapshot`` instead of
the restored instance. moto restores no real database, so tests point the scrub
at the local PostgreSQL. With a real AWS endpoint the variable is refused.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.db import connections
from psycopg.conninfo import make_conninfo

from pipelines.blueprints import rds_source_problem
from pipelines.stages.base import StageCancelled, StageContext, StageError

LOGICAL = "postgres_logical"
RDS = "aws_rds_snapshot"

SCRUB_OVERRIDE_ENV = "PORTAL_RDS_SCRUB_URL_OVERRIDE"
PARALLELISM_ENV = "PORTAL_DB_CLONE_PARALLELISM"  # databases cloned at once (default 4)
RDS_POLL_ENV = "PORTAL_RDS_POLL_SECONDS"  # how often RDS waits poll (default 30)
DNS_TIMEOUT_ENV = "PORTAL_DNS_TIMEOUT_SECONDS"  # wait for INSYNC (default 300)
DEFAULT_PARALLELISM = 4
DNS_TTL = 60
# Keys of an endpoint record that identify one clone (a retry must not delete it).
IDENTITY_KEYS = ("driver", "host", "database", "role", "instance_id", "account_id")

LogFn = Callable[[str], None]


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def parallelism(count: int) -> int:
    limit = int(_env_float(PARALLELISM_ENV, DEFAULT_PARALLELISM))
    return max(1, min(limit, count))


def secret_name(service: str, database: str) -> str:
    """Name of a logical clone's role password among the account's encrypted secrets."""
    return f"db/{service}/{database}"


# --- running one job per database, in parallel --------------------------------------------


class _Stopped(Exception):
    """Raised from a worker's log call once the stage decided to stop."""


@dataclass
class _Failure:
    service: str
    explanation: str
    retryable: bool


def run_per_service(
    ctx: StageContext,
    jobs: list[tuple[str, Callable[[LogFn], dict[str, Any]]]],
    what: str,
) -> dict[str, dict[str, Any]]:
    """Run ``job(log)`` per service in threads (up to the parallelism limit).

    Every log line is prefixed with ``[service]``. When a job fails or the run is
    cancelled the others are asked to stop at their next log line (they are
    idempotent: a retry picks up what they left). Each thread closes its Django
    database connections when it ends. Raises StageError naming every failure.
    """
    stop = threading.Event()

    def work(service: str, job: Callable[[LogFn], dict[str, Any]]) -> dict[str, Any]:
        def log(text: str) -> None:
            if stop.is_set():
                raise _Stopped()
            ctx.log(f"[{service}] {text}")

        try:
            return job(log)
        finally:
            connections.close_all()  # this thread's connections only

    limit = parallelism(len(jobs))
    ctx.log(f"{what}: {len(jobs)} database(s), {limit} at a time")
    results: dict[str, dict[str, Any]] = {}
    failures: list[_Failure] = []
    cancelled = False
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="db") as pool:
        futures: dict[Future[dict[str, Any]], str] = {
            pool.submit(work, service, job): service for service, job in jobs
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if not cancelled and ctx.is_cancelled():
                cancelled = True
                stop.set()
                ctx.log(f"{what}: cancel requested, stopping")
            for future in done:
                service = futures[future]
                try:
                    results[service] = future.result()
                except _Stopped:
                    failures.append(_Failure(service, "stopped", True))
                except Exception as exc:  # noqa: BLE001 - every failure is reported per service
                    failures.append(_failure(ctx, service, exc))
                    stop.set()
    if cancelled:
        raise StageCancelled()
    real = [f for f in failures if f.explanation != "stopped"]
    if real:
        explanation = "; ".join(f"{f.service}: {f.explanation}" for f in real)
        stopped = [f.service for f in failures if f.explanation == "stopped"]
        if stopped:
            explanation += f" (stopped: {', '.join(stopped)})"
        raise StageError(explanation, retryable=all(f.retryable for f in real))
    return results


def _failure(ctx: StageContext, service: str, exc: Exception) -> _Failure:
    from pipelines.clients.aws import AwsError
    from pipelines.clients.postgres import PostgresError
    from pipelines.dbclone.logical import CloneError

    if isinstance(exc, StageError):
        return _Failure(service, exc.explanation, exc.retryable)
    if isinstance(exc, CloneError):
        return _Failure(service, str(exc), exc.retryable)
    if isinstance(exc, AwsError):
        return _Failure(service, exc.explanation, exc.retryable)
    if isinstance(exc, PostgresError):
        return _Failure(service, str(exc), True)
    # A bug: the traceback goes to the (redacting) log, the explanation stays short.
    ctx.log(f"[{service}] " + traceback.format_exc())
    return _Failure(service, f"internal error: {type(exc).__name__}", False)


# --- outputs of the account ----------------------------------------------------------------


def output_value(ctx: StageContext, name: str) -> Any:
    """A Terraform output of the account (as recorded by apply), or None."""
    output = ctx.account.outputs.get(name)
    return output.get("value") if isinstance(output, Mapping) else None


def same_clone(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    if not a or not b:
        return False
    return all(a.get(key) == b.get(key) for key in IDENTITY_KEYS)


def without_previous(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "previous"}


# --- scrub SQL -----------------------------------------------------------------------------


def run_scrub(ctx: StageContext, files: list[str], url: str, log: LogFn) -> list[str]:
    """Run each scrub file in one transaction against ``url``. Scrub SQL must be
    idempotent (a retried stage runs it again), as UPDATEs usually are."""
    from pipelines.clients import postgres as pg

    for relative in files:
        text = ctx.blueprint.resolve_file(relative).read_text()
        pg.execute(url, text, autocommit=False)
        log(f"scrub {relative}: done")
    return list(files)


# --- postgres_logical ------------------------------------------------------------------------


def check_logical_rules(entry: Mapping[str, Any]) -> list[str]:
    """Check the masking rules against the source catalog: raises before anything is created.

    The driver checks again, but checking every database first means one bad rule
    stops the stage before any service's clone database exists. Returns warnings.
    """
    from pipelines.clients import postgres as pg
    from pipelines.dbclone.logical import plan_clone
    from pipelines.dbclone.masking import MaskingError, parse_rules

    service = entry["service"]
    try:
        url = pg.connection_url(entry["source"])
        pg.connection_url(entry["target"])
        with pg.connect(url, autocommit=True) as source:
            plan = plan_clone(
                pg.list_tables(source),
                parse_rules(entry.get("masking") or {}),
                strict=bool(entry.get("masking_strict")),
                check_fixed=lambda value, type_sql: pg.check_cast(source, value, type_sql),
            )
    except MaskingError as exc:
        raise StageError(f"{service}: {exc}", retryable=False) from None
    except pg.ConnectionNotConfigured as exc:
        raise StageError(f"{service}: {exc}", retryable=False) from None
    except pg.PostgresError as exc:
        raise StageError(f"{service}: source database: {exc}", retryable=True) from None
    return list(plan.warnings)


def clone_logical(ctx: StageContext, entry: Mapping[str, Any], log: LogFn) -> dict[str, Any]:
    from pipelines.clients import postgres as pg
    from pipelines.dbclone import logical

    service = entry["service"]
    spec = logical.LogicalCloneSpec(
        source=entry["source"],
        target=entry["target"],
        masking=dict(entry.get("masking") or {}),
        masking_strict=bool(entry.get("masking_strict")),
        jobs=int(entry.get("jobs", 2)),
    )
    result = logical.clone_logical(spec, ctx.account.name, service, ctx.run_id, log, ctx.add_secret)
    # The driver registered the password with add_secret; now keep it, encrypted.
    name = secret_name(service, result.database)
    ctx.records.store_secret(name=name, value=result.password)
    log(f"role password stored encrypted as {name}")
    clone_url = pg.with_dbname(pg.connection_url(entry["target"]), result.database)
    scrubbed = run_scrub(ctx, entry.get("scrub_sql") or [], clone_url, log)
    endpoint = {
        "driver": LOGICAL,
        "host": result.host,
        "port": result.port,
        "database": result.database,
        "role": result.role,
        "connection": entry["target"],
        "secret": name,
        "run_id": ctx.run_id,
        "dns": record_name(ctx, entry),
    }
    return {
        "driver": LOGICAL,
        "database": result.database,
        "host": result.host,
        "port": result.port,
        "role": result.role,
        "connection": entry["target"],
        "secret": name,
        "row_counts": dict(result.table_counts),
        "rows": sum(result.table_counts.values()),
        "warnings": list(result.warnings),
        "checks": dict(result.checks),
        "reused": result.reused,
        "scrubbed": scrubbed,
        "endpoint": endpoint,
        "delete_after_cutover": {"snapshots": {}},
    }


def drop_logical(ctx: StageContext, record: Mapping[str, Any], log: LogFn) -> None:
    from pipelines.clients import postgres as pg
    from pipelines.dbclone import logical

    url = pg.connection_url(str(record["connection"]))
    logical.drop_clone(url, str(record["database"]), str(record["role"]))
    log(f"dropped the previous clone database {record['database']} and role {record['role']}")
    if record.get("secret"):
        ctx.records.delete_secret(str(record["secret"]))


# --- aws_rds_snapshot -------------------------------------------------------------------------


@dataclass(frozen=True)
class RdsPlan:
    source: Any  # rds.SourceSpec
    target: Any  # rds.TargetSpec
    ids: Any  # rds.CloneIds


def rds_plan(ctx: StageContext, entry: Mapping[str, Any]) -> RdsPlan:
    """Source, target and names of an RDS clone; StageError when something is missing."""
    from pipelines.dbclone import rds

    service = entry["service"]
    source: Any = dict(entry["source"])
    if "parameter" in source:
        parameter = source["parameter"]
        source = ctx.config.get(parameter)
        problem = rds_source_problem(source)
        if problem:
            raise StageError(
                f"{service}: config parameter {parameter!r} must be the source database "
                f"{{account_id, region, instance}}: {problem}",
                retryable=False,
            )
    if not ctx.account.cloud_account_id:
        raise StageError(
            f"{service}: the account has no cloud account id (run the aws hooks first)",
            retryable=False,
        )
    subnet_group = output_value(ctx, "db_subnet_group_name")
    if not isinstance(subnet_group, str) or not subnet_group:
        raise StageError(
            f"{service}: the account has no Terraform output db_subnet_group_name "
            "(apply the blueprint first)",
            retryable=False,
        )
    groups = output_value(ctx, "db_security_group_ids")
    if isinstance(groups, Mapping):
        groups = groups.get(service)
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise StageError(
            f"{service}: Terraform output db_security_group_ids has no security groups "
            f"for {service}",
            retryable=False,
        )
    return RdsPlan(
        source=rds.SourceSpec(
            account_id=source["account_id"],
            region=source["region"],
            instance_id=source["instance"],
            use_automated_snapshot=bool(entry.get("use_automated_snapshot")),
        ),
        target=rds.TargetSpec(
            account_id=ctx.account.cloud_account_id,
            subnet_group_name=subnet_group,
            security_group_ids=tuple(groups),
            region=entry.get("target_region") or None,
            instance_class=entry.get("instance_class") or None,
        ),
        ids=rds.clone_identifiers(ctx.account.name, service, ctx.run_id),
    )


def clone_rds(ctx: StageContext, entry: Mapping[str, Any], log: LogFn) -> dict[str, Any]:
    from pipelines.dbclone import rds

    service = entry["service"]
    plan = rds_plan(ctx, entry)
    result = rds.clone_rds(
        plan.source,
        plan.target,
        plan.ids,
        log,
        ctx.add_secret,
        timeout_s=float(entry.get("timeout_minutes", 240)) * 60,
        poll_s=_env_float(RDS_POLL_ENV, 30.0),
    )
    database = str(entry.get("database_name") or "postgres")
    url = _rds_scrub_url(ctx, result, database, service, log)
    scrubbed = run_scrub(ctx, entry.get("scrub_sql") or [], url, log)
    row_estimates = _row_estimates(url)
    endpoint = {
        "driver": RDS,
        "host": result.address,
        "port": result.port,
        "database": database,
        "instance_id": result.instance_id,
        "account_id": plan.target.account_id,
        "region": result.region,
        "master_username": result.master_username,
        "secret_arn": result.secret_arn,
        "source": {
            "account_id": plan.source.account_id,
            "region": plan.source.region,
            "instance": plan.source.instance_id,
        },
        "run_id": ctx.run_id,
        "dns": record_name(ctx, entry),
    }
    return {
        "driver": RDS,
        "instance_id": result.instance_id,
        "host": result.address,
        "port": result.port,
        "database": database,
        "region": result.region,
        "secret_arn": result.secret_arn,
        "row_counts": row_estimates,
        "row_counts_are_estimates": True,
        "rows": sum(row_estimates.values()),
        "warnings": [],
        "scrubbed": scrubbed,
        "endpoint": endpoint,
        "delete_after_cutover": {
            "snapshots": {
                "source_account_id": plan.source.account_id,
                "source": list(result.source_snapshot_ids),
                "target": list(result.target_snapshot_ids),
            }
        },
    }


def _rds_scrub_url(ctx: StageContext, result: Any, database: str, service: str, log: LogFn) -> str:
    """How to reach the clone for scrubbing: its endpoint and master credentials.

    ``PORTAL_RDS_SCRUB_URL_OVERRIDE`` replaces that, for tests against moto only.
    """
    from pipelines.clients import aws
    from pipelines.dbclone import rds

    override = os.environ.get(SCRUB_OVERRIDE_ENV, "").strip()
    if override:
        if not aws.AwsSettings.from_env().is_local:
            raise StageError(
                f"{SCRUB_OVERRIDE_ENV} is set but AWS is not a local emulator: refusing to "
                "scrub anything but the clone",
                retryable=False,
            )
        log(f"scrub target overridden by {SCRUB_OVERRIDE_ENV} (local AWS emulator)")
        return override.replace("{service}", service)
    session, _ = aws.assume_role(
        ctx.account.cloud_account_id,
        None,
        f"portal-scrub-{ctx.run_id}",
        region=result.region or None,
    )
    password = rds.read_master_password(result.secret_arn, session)
    ctx.add_secret(password)
    return make_conninfo(
        "",
        host=result.address,
        port=str(result.port),
        user=result.master_username,
        password=password,
        dbname=database,
        sslmode="require",
        connect_timeout="30",
    )


def _row_estimates(url: str) -> dict[str, int]:
    """Rows per table from the planner statistics: exact counts of a freshly restored
    production-sized instance would read every block from S3."""
    from pipelines.clients import postgres as pg

    rows = pg.fetch_all(
        url,
        """
        SELECT n.nspname || '.' || c.relname, GREATEST(c.reltuples, 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_%'
        ORDER BY 1
        """,
    )
    return {str(name): int(count) for name, count in rows}


def rds_specs_of(record: Mapping[str, Any]) -> tuple[Any, Any]:
    """(SourceSpec, TargetSpec) enough for rds.delete_clone, from an endpoint record."""
    from pipelines.dbclone import rds

    source = record.get("source") or {}
    spec = rds.SourceSpec(
        account_id=str(source.get("account_id", "")),
        region=str(source.get("region", "")),
        instance_id=str(source.get("instance", "")),
    )
    target = rds.TargetSpec(
        account_id=str(record["account_id"]),
        subnet_group_name="",
        region=str(record.get("region") or "") or None,
    )
    return spec, target


def delete_rds(
    ctx: StageContext,
    record: Mapping[str, Any],
    log: LogFn,
    *,
    instance: bool,
    source_snapshots: Sequence[str] = (),
    target_snapshots: Sequence[str] = (),
) -> None:
    from pipelines.dbclone import rds

    spec, target = rds_specs_of(record)
    rds.delete_clone(
        spec,
        target,
        instance_id=str(record["instance_id"]) if instance else None,
        source_snapshot_ids=list(source_snapshots),
        target_snapshot_ids=list(target_snapshots),
        secret_arn=str(record.get("secret_arn") or "") or None if instance else None,
        log=log,
        poll_s=_env_float(RDS_POLL_ENV, 30.0),
        run_id=str(ctx.run_id),
    )


# --- DNS ---------------------------------------------------------------------------------


def record_name(ctx: StageContext, entry: Mapping[str, Any]) -> str:
    """The full record name for ``dns``: a relative name gets the account's zone appended."""
    name = str(entry.get("dns") or "")
    if not name:
        return ""
    if name.endswith("."):
        return name.rstrip(".")
    zone = output_value(ctx, "private_zone_name") or ctx.config.get("dns_zone") or ""
    zone = str(zone).rstrip(".")
    if zone and name != zone and not name.endswith("." + zone):
        return f"{name}.{zone}"
    return name


def record_type_and_value(host: str) -> tuple[str, str]:
    try:
        ipaddress.IPv4Address(host)
        return "A", host
    except ValueError:
        return "CNAME", host


def dns_session(ctx: StageContext) -> Any:
    """Route 53 in the account's own cloud account (its private zone), else the builder's."""
    from pipelines.clients import aws

    if ctx.account.cloud_account_id:
        session, _ = aws.assume_role(ctx.account.cloud_account_id, None, f"portal-dns-{ctx.run_id}")
        return session
    return aws.builder_session()


def upsert_dns(ctx: StageContext, session: Any, record: Mapping[str, Any], log: LogFn) -> str:
    from pipelines.clients import aws

    zone_id = output_value(ctx, "private_zone_id")
    if not isinstance(zone_id, str) or not zone_id:
        raise StageError(
            f"{record['dns']}: the account has no Terraform output private_zone_id",
            retryable=False,
        )
    kind, value = record_type_and_value(str(record["host"]))
    change = aws.upsert_record(session, zone_id, str(record["dns"]), kind, value, ttl=DNS_TTL)
    log(f"DNS {record['dns']} {kind} -> {value} (change {change})")
    aws.wait_change_insync(
        session,
        change,
        timeout_s=_env_float(DNS_TIMEOUT_ENV, 300.0),
        log=log,
        poll_s=min(5.0, _env_float(RDS_POLL_ENV, 5.0)),
    )
    return change
