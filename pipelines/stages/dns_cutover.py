"""Stage `dns_cutover`: point each service at the clone db_clone made, then clean up.

Per service, in this order:

1. Route 53: upsert the service's record (``dns`` in the blueprint) in the
   account's private zone (Terraform output ``private_zone_id``) to the new
   clone, and wait until the change is INSYNC.
2. Record the new clone as the service's endpoint (``Account.endpoints``),
   keeping the previous one under ``previous`` until it is deleted.
3. Delete the previous clone: the RDS instance (and its secret), or the logical
   clone's database and role (and its stored password).
4. Delete the new clone's intermediate snapshots in both accounts.
5. Record the endpoint again without ``previous``.

Idempotent: killed anywhere and retried, step 2's record says which clone was
the previous one even though the endpoint already points to the new one, every
delete tolerates "already gone", and a clone is never deleted while it is the
one being switched to.
"""

from __future__ import annotations

from typing import Any

from pipelines.dbclone import stage_support as support
from pipelines.stages.base import StageContext, StageError


def execute(ctx: StageContext) -> dict[str, Any]:
    cloned = (ctx.previous.get("db_clone") or {}).get("services")
    if cloned is None:
        raise StageError(
            "dns_cutover needs the outputs of a db_clone stage earlier in the run",
            retryable=False,
        )
    if not cloned:
        ctx.log("no cloned databases: nothing to switch")
        return {"services": {}}

    endpoints = ctx.records.endpoints()

    def job_for(service: str, clone: dict[str, Any]) -> Any:
        def job(log: support.LogFn) -> dict[str, Any]:
            return _cut_over(ctx, service, clone, endpoints.get(service), log)

        return job

    results = support.run_per_service(
        ctx,
        [(service, job_for(service, clone)) for service, clone in cloned.items()],
        "dns_cutover",
    )
    return {"services": {service: results[service] for service in cloned}}


def _cut_over(
    ctx: StageContext,
    service: str,
    clone: dict[str, Any],
    current: dict[str, Any] | None,
    log: support.LogFn,
) -> dict[str, Any]:
    new = dict(clone["endpoint"])
    if current and support.same_clone(current, new):
        # A retry after step 2: the record already points here and remembers the previous.
        previous = current.get("previous")
    else:
        previous = support.without_previous(current) if current else None
    if previous and support.same_clone(previous, new):
        previous = None

    change = ""
    if new.get("dns"):
        # One session per thread: boto3 sessions are not safe to share between threads.
        change = support.upsert_dns(ctx, support.dns_session(ctx), new, log)

    ctx.records.record(endpoints={service: {**new, "previous": previous} if previous else new})
    log(f"endpoint of {service} is now {describe_clone(new)}")

    deleted: list[str] = []
    if previous:
        log(f"deleting the previous clone {describe_clone(previous)}")
        delete_clone(ctx, previous, log)
        deleted.append(describe_clone(previous))

    snapshots = (clone.get("delete_after_cutover") or {}).get("snapshots") or {}
    if snapshots.get("source") or snapshots.get("target"):
        support.delete_rds(
            ctx,
            new,
            log,
            instance=False,
            source_snapshots=list(snapshots.get("source") or []),
            target_snapshots=list(snapshots.get("target") or []),
        )
        deleted += [
            f"snapshot {s}" for s in [*snapshots.get("source", []), *snapshots.get("target", [])]
        ]

    ctx.records.record(endpoints={service: new})
    return {
        "driver": new["driver"],
        "endpoint": describe_clone(new),
        "dns": new.get("dns") or "",
        "dns_change": change,
        "deleted": deleted,
    }


def delete_clone(ctx: StageContext, previous: dict[str, Any], log: support.LogFn) -> None:
    driver = previous.get("driver")
    if driver == support.LOGICAL:
        support.drop_logical(ctx, previous, log)
    elif driver == support.RDS:
        support.delete_rds(ctx, previous, log, instance=True)
    else:
        # Recorded by something else (e.g. Terraform's own database): not ours to delete.
        log(f"previous endpoint has driver {driver!r}: left in place")


def describe_clone(record: dict[str, Any]) -> str:
    if record.get("driver") == support.RDS:
        return (
            f"RDS instance {record.get('instance_id')} ({record.get('host')}:{record.get('port')})"
        )
    return f"database {record.get('database')} on {record.get('host')}:{record.get('port')}"
