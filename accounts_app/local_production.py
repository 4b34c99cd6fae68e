"""The local production: what ``seed_production`` builds so a fresh portal has a
production to clone, compare with and take data from.

Production of the shipped ``sandbox`` blueprint (the account its ``parity.production``
names, ``prod``), in production's shape (larger instances, the ``prod.internal``
zone, several services, one with a database), provisioned by the portal itself so
its Terraform state lives in the portal's backend and its resources are recorded for
the parity rules. Its orders database is made on the server of the blueprint's
``source`` connection (by default the portal's own PostgreSQL server) and filled with
generated production-like data.

The build runs in this process (``engine.run_here``), so the command is done when it
returns, with or without a worker running; a worker that picks a stage up first runs
it and the command waits. Idempotent: a second call finds everything built and
changes nothing; a call after a killed one finishes what that one left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.production import system_user
from pipelines import engine
from pipelines.blueprints import Blueprint, load_blueprint
from pipelines.clients import postgres as pg
from pipelines.dbclone import endpoints
from pipelines.dbclone.production_data import SeedResult, seed
from pipelines.models import ACTIVE_RUN_STATUSES, PipelineRun, RunKind, RunStatus, StageRun
from pipelines.services import RunConflict, start_production_build
from portal.errors import PortalError

BLUEPRINT = "sandbox"
# Production's shape: what QA and load tests must match (see the blueprint's parity).
CONFIG: dict[str, Any] = {
    "cidr": "10.0.0.0/16",
    "dns_zone": "prod.internal",
    "instance_size": "large",
    "services": [
        {"name": "web", "database": False},
        {"name": "orders", "database": True},
        {"name": "billing", "database": False},
        {"name": "search", "database": False},
    ],
}

LogFn = Callable[[str], None]


class LocalProductionError(PortalError):
    """The local production cannot be built; the message says why."""


@dataclass(frozen=True)
class LocalProduction:
    account: Account
    data: SeedResult
    run: PipelineRun | None  # the build run of this call; None when it was built already
    built_now: bool

    @property
    def changed(self) -> bool:
        return self.data.written or self.data.created_database or self.built_now


def production_config() -> dict[str, Any]:
    return dict(CONFIG)


def source_connection(blueprint: Blueprint, config: Mapping[str, Any]) -> tuple[str, str]:
    """(service, connection name) of the logical database clones take from production."""
    with_database = {s["name"] for s in config.get("services") or [] if s.get("database")}
    for entry in blueprint.databases:
        if entry["driver"] == endpoints.LOGICAL and entry["service"] in with_database:
            return str(entry["service"]), str(entry["source"])
    raise LocalProductionError(
        f"blueprint {blueprint.name} declares no postgres_logical database for the services "
        f"with a database ({', '.join(sorted(with_database)) or 'none'})"
    )


def seed_production(*, rows: int, log: LogFn, poll_s: float = 0.5) -> LocalProduction:
    """Build (or finish building) the local production and its data; see the module."""
    blueprint = load_blueprint(BLUEPRINT)
    if blueprint.parity is None:
        raise LocalProductionError(f"blueprint {BLUEPRINT} names no production (parity:)")
    name = blueprint.parity.production
    config = blueprint.validate_config(production_config())
    service, connection = source_connection(blueprint, config)
    try:
        url = pg.connection_url(connection)
        data = seed(url=url, rows=rows, log=lambda line: log(f"[{service}] {line}"))
    except pg.PostgresError as exc:
        raise LocalProductionError(f"{service} database: {exc}") from None
    account = _production_account(name=name, config=config)
    run = _build(account=account, log=log, poll_s=poll_s)
    account.refresh_from_db()
    if run is not None and run.status != RunStatus.SUCCEEDED:
        raise LocalProductionError(
            f"the build of {name} (run #{run.pk}) is {run.status}"
            + (f": {run.explanation}" if run.explanation else "")
        )
    return LocalProduction(account=account, data=data, run=run, built_now=run is not None)


def _production_account(*, name: str, config: dict[str, Any]) -> Account:
    # get_or_create: a second seed_production racing this one gets the same account.
    account, _ = Account.objects.get_or_create(
        name=name,
        defaults={
            "blueprint": BLUEPRINT,
            "purpose": Purpose.PRODUCTION,
            "protected": True,
            "owner": system_user(),
            "config": config,
            "status": AccountStatus.PROVISIONING,
        },
    )
    if account.blueprint != BLUEPRINT or account.purpose != Purpose.PRODUCTION:
        raise LocalProductionError(
            f"account {name!r} exists as a {account.purpose} account of blueprint "
            f"{account.blueprint!r}: it is not the local production"
        )
    return account


def _build(*, account: Account, log: LogFn, poll_s: float) -> PipelineRun | None:
    """The build run this call ran or finished, or None when the account is built."""
    latest = (
        PipelineRun.objects.filter(account=account, kind=RunKind.PROVISION)
        .order_by("-created_at", "-id")
        .first()
    )
    if latest is not None and latest.status == RunStatus.SUCCEEDED:
        return None
    if latest is not None and latest.status in ACTIVE_RUN_STATUSES:
        log(f"run #{latest.pk} of {account.name} was left unfinished: going on with it")
        run = latest
    elif account.status == AccountStatus.READY and latest is None:
        # Registered (account_register), not built by the portal: not ours to build.
        log(f"{account.name} is registered as it is (account_register): not built here")
        return None
    else:
        try:
            run = start_production_build(account)
            log(f"building {account.name}: run #{run.pk}")
        except RunConflict as exc:
            # Another seed_production started it a moment ago: follow that one.
            run = PipelineRun.objects.get(pk=exc.holder_id)
            log(f"run #{run.pk} of {account.name} is under way: following it")

    told: set[int] = set()

    def waiting(stage: StageRun) -> None:
        if stage.pk not in told:
            told.add(stage.pk)
            log(f"  {stage.kind} runs on {stage.worker or 'a worker'}: waiting for it")

    finished = engine.run_here(run.pk, poll_s=poll_s, on_wait=waiting)
    for stage in finished.stages.order_by("position"):
        note = f": {stage.explanation}" if stage.explanation else ""
        log(f"  {stage.kind:<13} {stage.status}{note}")
    return finished
