"""Stage `db_teardown` (teardown runs): delete every database clone the account has.

Runs after the destroy plan is approved and before it is applied, because a restored
RDS instance sits in the subnet group and security groups Terraform is about to
destroy. Each service's clone (and a previous one a crashed cutover left behind) is
deleted, then its endpoint is removed from the account. Idempotent: every delete
tolerates "already gone", and an endpoint is removed only after its clone is.
"""

from __future__ import annotations

from typing import Any

from pipelines.dbclone import endpoints
from pipelines.dbclone.endpoints import EndpointRecord
from pipelines.dbclone.parallel import Job, LogFn, ServiceJob, run_per_service
from pipelines.stages.base import StageContext, log_with_outcome
from pipelines.stages.dns_cutover import delete_clone


def execute(ctx: StageContext) -> dict[str, Any]:
    clones = {
        service: record
        for service, record in ctx.records.endpoints().items()
        if record and record.get("driver") in endpoints.CLONE_DRIVERS
    }
    if not clones:
        log_with_outcome(ctx)  # the last line: it goes out with the outcome
        ctx.log("no database clones recorded on the account: nothing to delete")
        return {"services": {}}
    jobs = [
        ServiceJob(service=service, job=_job(ctx=ctx, service=service, record=record))
        for service, record in clones.items()
    ]
    return {"services": run_per_service(ctx=ctx, jobs=jobs, what="db_teardown")}


def _job(*, ctx: StageContext, service: str, record: EndpointRecord) -> Job:
    def job(log: LogFn) -> dict[str, Any]:
        deleted = []
        for clone in (record.get("previous"), endpoints.without_previous(record)):
            if clone:
                log(f"deleting {endpoints.describe(clone)}")
                delete_clone(ctx=ctx, record=clone, log=log)
                deleted.append(endpoints.describe(clone))
        ctx.records.record(endpoints={service: None})
        return {"deleted": deleted}

    return job
