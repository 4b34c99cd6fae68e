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

from pipelines.dbclone import dns, endpoints, logical_driver, rds_driver
from pipelines.dbclone.endpoints import EndpointRecord
from pipelines.dbclone.parallel import Job, LogFn, ServiceJob, run_per_service
from pipelines.stages.base import StageContext, StageError, log_with_outcome


def execute(ctx: StageContext) -> dict[str, Any]:
    cloned = (ctx.previous.get("db_clone") or {}).get("services")
    if cloned is None:
        raise StageError(
            "dns_cutover needs the outputs of a db_clone stage earlier in the run",
            retryable=False,
        )
    if not cloned:
        log_with_outcome(ctx)  # the last line: it goes out with the outcome
        ctx.log("no cloned databases: nothing to switch")
        return {"services": {}}

    current = ctx.records.endpoints()
    jobs = [
        ServiceJob(
            service=service,
            job=_job(ctx=ctx, service=service, clone=clone, current=current.get(service)),
        )
        for service, clone in cloned.items()
    ]
    results = run_per_service(ctx=ctx, jobs=jobs, what="dns_cutover")
    return {"services": {service: results[service] for service in cloned}}


def _job(
    *, ctx: StageContext, service: str, clone: dict[str, Any], current: EndpointRecord | None
) -> Job:
    def job(log: LogFn) -> dict[str, Any]:
        return _cut_over(ctx=ctx, service=service, clone=clone, current=current, log=log)

    return job


def _cut_over(
    *,
    ctx: StageContext,
    service: str,
    clone: dict[str, Any],
    current: EndpointRecord | None,
    log: LogFn,
) -> dict[str, Any]:
    new = dict(clone["endpoint"])
    if current and endpoints.same_clone(recorded=current, clone=new):
        # A retry after step 2: the record already points here and remembers the previous.
        previous = current.get("previous")
    else:
        previous = endpoints.without_previous(current) if current else None
    if previous and endpoints.same_clone(recorded=previous, clone=new):
        previous = None

    change = ""
    if new.get("dns"):
        # One session per thread: boto3 sessions are not safe to share between threads.
        change = dns.upsert(ctx=ctx, session=dns.session_for(ctx), record=new, log=log)

    ctx.records.record(endpoints={service: {**new, "previous": previous} if previous else new})
    log(f"endpoint of {service} is now {endpoints.describe(new)}")

    deleted: list[str] = []
    if previous:
        log(f"deleting the previous clone {endpoints.describe(previous)}")
        delete_clone(ctx=ctx, record=previous, log=log)
        deleted.append(endpoints.describe(previous))

    snapshots = (clone.get("delete_after_cutover") or {}).get("snapshots") or {}
    source_snapshots = list(snapshots.get("source") or [])
    target_snapshots = list(snapshots.get("target") or [])
    if source_snapshots or target_snapshots:
        rds_driver.delete(
            ctx=ctx,
            record=new,
            log=log,
            instance=False,
            source_snapshots=source_snapshots,
            target_snapshots=target_snapshots,
        )
        deleted += [f"snapshot {s}" for s in [*source_snapshots, *target_snapshots]]

    ctx.records.record(endpoints={service: new})
    return {
        "driver": new["driver"],
        "endpoint": endpoints.describe(new),
        "dns": new.get("dns") or "",
        "dns_change": change,
        "deleted": deleted,
    }


def delete_clone(*, ctx: StageContext, record: EndpointRecord, log: LogFn) -> None:
    """Delete the clone an endpoint record describes (a record of another driver stays)."""
    driver = record.get("driver")
    if driver == endpoints.LOGICAL:
        logical_driver.drop(ctx=ctx, record=record, log=log)
    elif driver == endpoints.RDS:
        rds_driver.delete(ctx=ctx, record=record, log=log, instance=True)
    else:
        # Recorded by something else (e.g. Terraform's own database): not ours to delete.
        log(f"previous endpoint has driver {driver!r}: left in place")
