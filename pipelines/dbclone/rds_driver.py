"""The db_clone / dns_cutover side of an ``aws_rds_snapshot`` clone: the plan from the
blueprint entry and the account's Terraform outputs, the clone made
(pipelines.dbclone.rds), its scrub SQL run as the master user, and deletes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings

from pipelines.blueprints import rds_source_problem
from pipelines.dbclone import endpoints, golden_store, rds, scrub
from pipelines.dbclone.dns import record_name
from pipelines.dbclone.endpoints import output_value
from pipelines.dbclone.parallel import LogFn
from pipelines.models import RunKind
from pipelines.stages.base import StageContext, StageError


@dataclass(frozen=True)
class RdsPlan:
    source: rds.SourceSpec
    target: rds.TargetSpec
    ids: rds.CloneIds


def _source_of(*, ctx: StageContext, entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The source database {account_id, region, instance}, from the entry or a config value."""
    source = entry["source"]
    if "parameter" not in source:
        return dict(source)
    parameter = source["parameter"]
    value = ctx.config.get(parameter)
    problem = rds_source_problem(value)
    if problem or not isinstance(value, Mapping):
        raise StageError(
            f"{entry['service']}: config parameter {parameter!r} must be the source database "
            f"{{account_id, region, instance}}: {problem}",
            retryable=False,
        )
    return value


def plan(*, ctx: StageContext, entry: Mapping[str, Any]) -> RdsPlan:
    """Source, target and names of an RDS clone; StageError when something is missing."""
    service = entry["service"]
    source = _source_of(ctx=ctx, entry=entry)
    if not ctx.account.cloud_account_id:
        raise StageError(
            f"{service}: the account has no cloud account id (run the aws hooks first)",
            retryable=False,
        )
    subnet_group = output_value(ctx=ctx, name="db_subnet_group_name")
    if not isinstance(subnet_group, str) or not subnet_group:
        raise StageError(
            f"{service}: the account has no Terraform output db_subnet_group_name "
            "(apply the blueprint first)",
            retryable=False,
        )
    groups = output_value(ctx=ctx, name="db_security_group_ids")
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
        ids=rds.clone_identifiers(account=ctx.account.name, service=service, run_id=ctx.run_id),
    )


def clone(*, ctx: StageContext, entry: Mapping[str, Any], log: LogFn) -> dict[str, Any]:
    """Clone one instance and scrub it; the stage outputs of its service (no secrets)."""
    rds_plan = plan(ctx=ctx, entry=entry)
    data_source: dict[str, str] = {}
    if entry.get("golden"):
        # Production was restored and scrubbed in the data-preparation account: this
        # account gets only the masked golden snapshot, shared from there.
        made = golden_store.rds_golden_for_clone(
            blueprint=ctx.blueprint,
            entry=entry,
            source=rds_plan.source,
            refresh=ctx.run_kind == RunKind.REFRESH_DATA,
            log=log,
            add_secret=ctx.add_secret,
        )
        assert made.database and made.taken_at  # a ready golden snapshot has both
        golden = golden_store.golden_snapshot(
            made, region=rds_plan.source.region, instance_id=rds_plan.source.instance_id
        )
        rds_plan = replace(rds_plan, source=golden.source())
        data_source = {"golden": made.database, "data_taken_at": made.taken_at.isoformat()}
    result = rds.clone_rds(
        spec=rds_plan.source,
        target=rds_plan.target,
        ids=rds_plan.ids,
        log=log,
        add_secret=ctx.add_secret,
        timeout_s=float(entry.get("timeout_minutes", 240)) * 60,
        poll_s=float(settings.PORTAL_RDS_POLL_SECONDS),
    )
    database = str(entry.get("database_name") or "postgres")
    url = scrub.rds_clone_url(
        cloud_account_id=rds_plan.target.account_id,
        run_id=ctx.run_id,
        clone=result,
        database=database,
        add_secret=ctx.add_secret,
        resolver=scrub.endpoint_resolver(),
    )
    if data_source:
        scrubbed = list(entry.get("scrub_sql") or [])  # run on the golden snapshot's instance
    else:
        scrubbed = scrub.run_scrub(
            blueprint=ctx.blueprint, files=entry.get("scrub_sql") or [], url=url, log=log
        )
    row_estimates = scrub.row_estimates(url)
    endpoint: endpoints.EndpointRecord = {
        "driver": endpoints.RDS,
        "host": result.address,
        "port": result.port,
        "database": database,
        "instance_id": result.instance_id,
        "account_id": rds_plan.target.account_id,
        "region": result.region,
        "master_username": result.master_username,
        "secret_arn": result.secret_arn,
        "source": {
            "account_id": rds_plan.source.account_id,
            "region": rds_plan.source.region,
            "instance": rds_plan.source.instance_id,
        },
        "run_id": ctx.run_id,
        "dns": record_name(ctx=ctx, entry=entry),
        **data_source,
    }
    return {
        "driver": endpoints.RDS,
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
                "source_account_id": rds_plan.source.account_id,
                "source": list(result.source_snapshot_ids),
                "target": list(result.target_snapshot_ids),
            }
        },
        **data_source,
    }


def _specs_of(record: Mapping[str, Any]) -> tuple[rds.SourceSpec, rds.TargetSpec]:
    """(SourceSpec, TargetSpec), enough for rds.delete_clone, from an endpoint record."""
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


def delete(
    *,
    ctx: StageContext,
    record: Mapping[str, Any],
    log: LogFn,
    instance: bool,
    source_snapshots: Sequence[str] = (),
    target_snapshots: Sequence[str] = (),
) -> None:
    """Delete the recorded clone's instance (and secret) when ``instance``, and snapshots."""
    spec, target = _specs_of(record)
    rds.delete_clone(
        spec=spec,
        target=target,
        instance_id=str(record["instance_id"]) if instance else None,
        log=log,
        source_snapshot_ids=list(source_snapshots),
        target_snapshot_ids=list(target_snapshots),
        secret_arn=(str(record.get("secret_arn") or "") or None) if instance else None,
        poll_s=float(settings.PORTAL_RDS_POLL_SECONDS),
        run_id=str(ctx.run_id),
    )
