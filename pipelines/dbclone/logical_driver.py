"""The db_clone / dns_cutover side of a ``postgres_logical`` clone: rules checked up
front, the clone made (pipelines.dbclone.logical), its password stored encrypted,
its scrub SQL run, and the dropping of a previous clone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from pipelines.clients import postgres as pg
from pipelines.dbclone import endpoints, golden, golden_store, logical, scrub
from pipelines.dbclone.clone_plan import plan_clone
from pipelines.dbclone.dns import record_name
from pipelines.dbclone.masking import MaskingError, parse_rules
from pipelines.dbclone.parallel import LogFn
from pipelines.models import RunKind
from pipelines.stages.base import StageContext, StageError


def check_rules(entry: Mapping[str, Any]) -> list[str]:
    """Check the masking rules against the source catalog: raises before anything is created.

    The driver checks again, but checking every database first means one bad rule
    stops the stage before any service's clone database exists. Returns warnings.
    """
    service = entry["service"]
    try:
        url = pg.connection_url(entry["source"])
        pg.connection_url(entry["target"])
        with pg.connect(url, autocommit=True) as source:
            plan = plan_clone(
                tables=pg.list_tables(source),
                rules=parse_rules(entry.get("masking") or {}),
                strict=bool(entry.get("masking_strict")),
                check_fixed=lambda value, type_sql: pg.check_cast(
                    conn=source, value=value, type_sql=type_sql
                ),
            )
    except MaskingError as exc:
        raise StageError(f"{service}: {exc}", retryable=False) from None
    except pg.ConnectionNotConfigured as exc:
        raise StageError(f"{service}: {exc}", retryable=False) from None
    except pg.PostgresError as exc:
        raise StageError(f"{service}: source database: {exc}", retryable=True) from None
    return list(plan.warnings)


def clone(*, ctx: StageContext, entry: Mapping[str, Any], log: LogFn) -> dict[str, Any]:
    """Clone one database; the stage outputs of its service (no secrets)."""
    service = entry["service"]
    if entry.get("golden"):
        return _copy_of_golden(ctx=ctx, entry=entry, log=log)
    spec = logical.LogicalCloneSpec(
        source=entry["source"],
        target=entry["target"],
        masking=dict(entry.get("masking") or {}),
        masking_strict=bool(entry.get("masking_strict")),
        jobs=int(entry.get("jobs", 2)),
    )
    result = logical.clone_logical(
        spec=spec,
        account=ctx.account.name,
        service=service,
        run_id=ctx.run_id,
        log=log,
        add_secret=ctx.add_secret,
    )
    name = _store_password(ctx=ctx, service=service, result=result, log=log)
    clone_url = pg.with_dbname(pg.connection_url(entry["target"]), result.database)
    scrubbed = scrub.run_scrub(
        blueprint=ctx.blueprint, files=entry.get("scrub_sql") or [], url=clone_url, log=log
    )
    return _outputs(ctx=ctx, entry=entry, result=result, secret=name, scrubbed=scrubbed)


def _copy_of_golden(*, ctx: StageContext, entry: Mapping[str, Any], log: LogFn) -> dict[str, Any]:
    """The account's database copied from the golden copy (masked, checked and scrubbed
    once); the endpoint record says which golden copy and when its data was taken."""
    made = golden_store.golden_for_clone(
        blueprint=ctx.blueprint,
        entry=entry,
        refresh=ctx.run_kind == RunKind.REFRESH_DATA,
        log=log,
        add_secret=ctx.add_secret,
    )
    database = logical.clone_database_name(
        account=ctx.account.name, service=entry["service"], run_id=ctx.run_id
    )
    result = golden.copy_golden(
        target=entry["target"],
        golden=golden_store.ref(made),
        database=database,
        log=log,
        add_secret=ctx.add_secret,
        strategy=pg.CopyStrategy(settings.PORTAL_GOLDEN_COPY_STRATEGY),
    )
    name = _store_password(ctx=ctx, service=entry["service"], result=result, log=log)
    assert made.database and made.taken_at  # a ready golden copy has both
    source = {"golden": made.database, "data_taken_at": made.taken_at.isoformat()}
    return _outputs(
        ctx=ctx,
        entry=entry,
        result=result,
        secret=name,
        scrubbed=list(entry.get("scrub_sql") or []),  # run on the golden copy
        data_source=source,
    )


def _store_password(
    *, ctx: StageContext, service: str, result: logical.CloneResult, log: LogFn
) -> str:
    """The driver registered the password with add_secret; now keep it, encrypted."""
    name = endpoints.secret_name(service=service, database=result.database)
    ctx.records.store_secret(name=name, value=result.password)
    log(f"role password stored encrypted as {name}")
    return name


def _outputs(
    *,
    ctx: StageContext,
    entry: Mapping[str, Any],
    result: logical.CloneResult,
    secret: str,
    scrubbed: list[str],
    data_source: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The stage outputs of one service (no secrets)."""
    name = secret
    endpoint: endpoints.EndpointRecord = {
        "driver": endpoints.LOGICAL,
        "host": result.host,
        "port": result.port,
        "database": result.database,
        "role": result.role,
        "connection": entry["target"],
        "secret": name,
        "run_id": ctx.run_id,
        "dns": record_name(ctx=ctx, entry=entry),
        **(data_source or {}),
    }
    return {
        "driver": endpoints.LOGICAL,
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
        **(data_source or {}),
    }


def drop(*, ctx: StageContext, record: Mapping[str, Any], log: LogFn) -> None:
    """Drop a clone's database and role, then its stored password."""
    url = pg.connection_url(str(record["connection"]))
    logical.drop_clone(url=url, database=str(record["database"]), role=str(record["role"]))
    log(f"dropped the previous clone database {record['database']} and role {record['role']}")
    if record.get("secret"):
        ctx.records.delete_secret(str(record["secret"]))
