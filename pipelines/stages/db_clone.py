"""Stage `db_clone`: every database the blueprint declares, cloned for this account.

One stage clones them all, several at once (``PORTAL_DB_CLONE_PARALLELISM``),
each with its own ``[service]`` lines in the log:

- ``postgres_logical``: a new masked database and login role on the target
  server (names from account, service and run); the role's password is
  registered for redaction, then stored encrypted on the account
  (``db/<service>/<database>``); never in outputs or logs.
- ``aws_rds_snapshot``: the snapshot flow of pipelines.dbclone.rds into the
  account's cloud account (subnet group and security groups from its Terraform
  outputs); the master password lives in the target's Secrets Manager, only its
  ARN is recorded.

Then each clone's scrub SQL runs against it. Before anything is created, every
logical database's masking rules are checked against its source, so one bad rule
stops the stage with no clone database made for any service.

Nothing is switched here: the account keeps using its current databases until
``dns_cutover``. The outputs say, per service, where the new clone is (no
secrets), its row counts and warnings, and what must be deleted after cutover.
Idempotent: the drivers use deterministic names and look before they create.
"""

from __future__ import annotations

from typing import Any

from pipelines.dbclone import endpoints, logical_driver, rds_driver
from pipelines.dbclone.endpoints import EndpointRecord
from pipelines.dbclone.parallel import Job, LogFn, ServiceJob, run_per_service
from pipelines.stages.base import StageContext, log_with_outcome


def execute(ctx: StageContext) -> dict[str, Any]:
    databases = list(ctx.blueprint.databases)
    if not databases:
        log_with_outcome(ctx)  # the last line: it goes out with the outcome
        ctx.log(f"blueprint {ctx.blueprint.name} declares no databases: nothing to clone")
        return {"services": {}}

    # Preflight, before any database is created anywhere.
    for entry in databases:
        if entry["driver"] == endpoints.LOGICAL:
            warnings = logical_driver.check_rules(entry)
            ctx.log(
                f"[{entry['service']}] masking rules checked against the source "
                f"({len(warnings)} warning(s))"
            )
        else:
            plan = rds_driver.plan(ctx=ctx, entry=entry)
            ctx.log(
                f"[{entry['service']}] RDS {plan.source.instance_id} of account "
                f"{plan.source.account_id} -> {plan.ids.instance} in account "
                f"{plan.target.account_id}"
            )

    current = ctx.records.endpoints()
    jobs = [
        ServiceJob(
            service=entry["service"],
            job=_job(ctx=ctx, entry=entry, previous=current.get(entry["service"])),
        )
        for entry in databases
    ]
    results = run_per_service(ctx=ctx, jobs=jobs, what="db_clone")
    return {"services": {entry["service"]: results[entry["service"]] for entry in databases}}


def _job(*, ctx: StageContext, entry: dict[str, Any], previous: EndpointRecord | None) -> Job:
    clone = logical_driver.clone if entry["driver"] == endpoints.LOGICAL else rds_driver.clone

    def job(log: LogFn) -> dict[str, Any]:
        outputs = clone(ctx=ctx, entry=entry, log=log)
        if previous and not endpoints.same_clone(recorded=previous, clone=outputs["endpoint"]):
            # Informational: dns_cutover reads Account.endpoints again when it runs.
            outputs["delete_after_cutover"]["previous"] = endpoints.without_previous(previous)
        log(f"clone ready: {outputs['database']} on {outputs['host']}:{outputs['port']}")
        return outputs

    return job
