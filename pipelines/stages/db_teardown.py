"""Stage `db_teardown` (teardown runs): delete every database clone the account has.

Runs after the destroy plan is approved and before it is applied, because a restored
RDS instance sits in the subnet group and security groups Terraform is about to
destroy. Each service's clone (and a previous one a crashed cutover left behind) is
deleted, then its endpoint is removed from the account. Idempotent: every delete
tolerates "already gone", and an endpoint is removed only after its clone is.
"""

from __future__ import annotations

from typing import Any

from pipelines.dbclone import stage_support as support
from pipelines.stages.base import StageContext
from pipelines.stages.dns_cutover import delete_clone, describe_clone

CLONE_DRIVERS = (support.LOGICAL, support.RDS)


def execute(ctx: StageContext) -> dict[str, Any]:
    endpoints = ctx.records.endpoints()
    clones = {s: r for s, r in endpoints.items() if r and r.get("driver") in CLONE_DRIVERS}
    if not clones:
        ctx.log("no database clones recorded on the account: nothing to delete")
        return {"services": {}}

    def job_for(service: str, record: dict[str, Any]) -> Any:
        def job(log: support.LogFn) -> dict[str, Any]:
            deleted = []
            for clone in (record.get("previous"), support.without_previous(record)):
                if clone:
                    log(f"deleting {describe_clone(clone)}")
                    delete_clone(ctx, clone, log)
                    deleted.append(describe_clone(clone))
            ctx.records.record(endpoints={service: None})
            return {"deleted": deleted}

        return job

    results = support.run_per_service(
        ctx,
        [(service, job_for(service, record)) for service, record in clones.items()],
        "db_teardown",
    )
    return {"services": results}
