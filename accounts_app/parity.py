"""Parity reports: how a clone differs from its production, computed now and stored.

The comparison itself is ``pipelines.parity`` (pure functions); this module finds the
production reference, the versions and the data age, and keeps the result as a
``ParityReport`` whose ``report`` is the object ``account_parity --json`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from accounts_app.models import Account, AccountStatus, ParityReport, Purpose
from pipelines import parity
from pipelines.blueprints import Blueprint, BlueprintError, load_blueprint
from pipelines.models import BUILDING_KINDS, PipelineRun, RunStatus, StageRun, StageStatus
from pipelines.parity_rules import Enforce
from portal.errors import PortalError

DATA_STAGE = "db_clone"


class ParityUnavailable(PortalError):
    """No report can be made: the account is production, or has no production reference."""


def production_of(account: Account) -> Account:
    """The production account the clone is compared with, or ParityUnavailable saying why."""
    if account.purpose == Purpose.PRODUCTION:
        raise ParityUnavailable(f"account {account.name} is production: it is the reference")
    try:
        blueprint = load_blueprint(account.blueprint)
    except BlueprintError as exc:
        raise ParityUnavailable(str(exc)) from exc
    if blueprint.parity is None:
        raise ParityUnavailable(
            f"blueprint {blueprint.name} has no parity rules: no production reference"
        )
    production = Account.objects.filter(
        name=blueprint.parity.production, purpose=Purpose.PRODUCTION
    ).first()
    if production is None:
        raise ParityUnavailable(
            f"production account {blueprint.parity.production!r} of blueprint "
            f"{blueprint.name} is not registered (see account_register)"
        )
    return production


def built_version(account: Account) -> str | None:
    """The blueprint version of the latest succeeded provision or update, or as registered."""
    run = (
        PipelineRun.objects.filter(
            account=account, kind__in=BUILDING_KINDS, status=RunStatus.SUCCEEDED
        )
        .exclude(blueprint_version="")
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .first()
    )
    if run is not None:
        return run.blueprint_version
    return account.registered_version or None


def data_taken_at(account: Account) -> datetime | None:
    """When the account's data was taken from production: its oldest current clone's.

    A clone copied from a golden copy records when that golden copy's data was taken
    (``data_taken_at``); any other names the run that made it, whose db_clone stage
    finished then; a record with neither falls back on the latest succeeded db_clone
    stage. None when the account has no data.
    """
    records = [r for r in (account.endpoints or {}).values() if isinstance(r, dict)]
    if not records:
        return None
    recorded = [_recorded_time(r.get("data_taken_at")) for r in records]
    golden_times = [t for t in recorded if t is not None]
    records = [r for r, t in zip(records, recorded, strict=True) if t is None]
    if not records:
        return min(golden_times)
    succeeded = StageRun.objects.filter(
        run__account=account, kind=DATA_STAGE, status=StageStatus.SUCCEEDED
    ).exclude(finished_at=None)
    run_ids = {str(r["run_id"]) for r in records if r.get("run_id") is not None}
    times = [
        stage.finished_at
        for stage in succeeded.filter(run_id__in=[int(i) for i in run_ids if i.isdigit()])
        if stage.finished_at is not None
    ]
    if len(times) < len(records):
        latest = succeeded.order_by("-finished_at").first()
        if latest is not None and latest.finished_at is not None:
            times.append(latest.finished_at)
    times += golden_times
    return min(times) if times else None


def _recorded_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        taken = datetime.fromisoformat(value)
    except ValueError:
        return None
    return taken if timezone.is_aware(taken) else None


def compute_report(*, account: Account, now: datetime | None = None) -> ParityReport:
    """Compare the clone with its production now, store the report and return it."""
    production = production_of(account)
    blueprint = load_blueprint(account.blueprint)
    assert blueprint.parity is not None  # production_of checked it
    now = now or timezone.now()
    taken = data_taken_at(account)
    age = round((now - taken).total_seconds() / 3600, 1) if taken is not None else None
    versions = {"clone": built_version(account), "production": built_version(production)}
    checks = parity.compare(
        parity=blueprint.parity,
        purpose=account.purpose,
        clone_config=account.config,
        production_config=production.config,
        clone_resources=account.resources or [],
        production_resources=production.resources or [],
        clone_version=versions["clone"] or "",
        production_version=versions["production"] or "",
        data_age_hours=age,
    )
    ok = parity.in_parity(checks)
    report: dict[str, Any] = {
        "account": account.name,
        "production": production.name,
        "purpose": account.purpose,
        "in_parity": ok,
        "checks": [check.as_dict() for check in checks],
        "data_age_hours": age,
        "blueprint_version": versions,
        "checked_at": now.isoformat(),
    }
    return ParityReport.objects.create(account=account, checked_at=now, in_parity=ok, report=report)


@dataclass(frozen=True)
class ProductionValues:
    """Production's values of a purpose's ``equal`` paths, as the request form offers them."""

    production: str
    purpose: str
    enforce: Enforce
    values: dict[str, Any]  # dotted config path -> production's value (None: it has none)

    @property
    def locked(self) -> bool:
        """Under ``refuse`` the form offers them read-only (the server checks them anyway)."""
        return self.enforce == Enforce.REFUSE


def production_values(*, blueprint: Blueprint, purpose: str) -> ProductionValues | None:
    """Production's values for the purpose's ``equal`` paths, or None when there is nothing
    to hold a request to (no rules for the purpose, no ``equal`` paths, no production)."""
    if blueprint.parity is None or purpose not in blueprint.parity.purposes:
        return None
    rules = blueprint.parity.rules_for(purpose)
    if not rules.equal:
        return None
    production = Account.objects.filter(
        name=blueprint.parity.production, purpose=Purpose.PRODUCTION
    ).first()
    if production is None:
        return None
    return ProductionValues(
        production=production.name,
        purpose=purpose,
        enforce=rules.enforce,
        values={path: parity.config_value(production.config, path) for path in rules.equal},
    )


def purposes_held_to_production(blueprint: Blueprint) -> list[str]:
    """The purposes whose requests production's values fill in (one query)."""
    if blueprint.parity is None:
        return []
    held = [p for p, rules in blueprint.parity.purposes.items() if rules.equal]
    registered = Account.objects.filter(
        name=blueprint.parity.production, purpose=Purpose.PRODUCTION
    ).exists()
    return held if registered else []


def request_problems(
    *, blueprint: Blueprint, purpose: str, config: dict[str, Any]
) -> tuple[dict[str, str], list[str]]:
    """A requested config against production's for the purpose's ``equal`` rules.

    Returns (refusals: JSON path -> message, under ``enforce: refuse``; warnings, under
    ``enforce: warn``). Each message names the path, the rule and production's value.
    Nothing to say when the blueprint has no rules or its production is not registered yet.
    """
    reference = production_values(blueprint=blueprint, purpose=purpose)
    if reference is None:
        return {}, []
    refusals: dict[str, str] = {}
    warnings: list[str] = []
    for path, theirs in reference.values.items():
        if parity.config_value(config, path) == theirs:
            continue
        message = (
            f"must equal production's value {parity.as_text(theirs)} "
            f"(parity rule for {purpose}: equal [{path}], production {reference.production})"
        )
        if reference.locked:
            refusals[f"$.{path}"] = message
        else:
            warnings.append(f"{path}: {message}")
    return refusals, warnings


def differing_paths(report: ParityReport | None) -> frozenset[str]:
    if report is None:
        return frozenset()
    checks = report.report.get("checks", [])
    return frozenset(c["path"] for c in checks if c["status"] == parity.CheckStatus.DIFFERS)


def check_all(*, now: datetime | None = None) -> list[ParityReport]:
    """A report for every ready clone with a production reference (the schedule's job).

    Returns the reports whose owners are to be told: out of parity, and differing in
    other paths than the account's previous report (so once per change, not daily).
    """
    changed = []
    clones = Account.objects.filter(status=AccountStatus.READY).exclude(purpose=Purpose.PRODUCTION)
    for account in clones.order_by("pk"):
        previous = latest_report(account)
        try:
            report = compute_report(account=account, now=now)
        except ParityUnavailable:
            continue
        now_differing = differing_paths(report)
        if now_differing and now_differing != differing_paths(previous):
            changed.append(report)
    return changed


def latest_report(account: Account) -> ParityReport | None:
    return ParityReport.objects.filter(account=account).order_by("-checked_at", "-id").first()


def report_for(*, account: Account, recompute: bool = False) -> ParityReport:
    """The latest stored report, or one computed now (asked for, or none stored yet)."""
    latest = None if recompute else latest_report(account)
    return latest or compute_report(account=account)


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as text: one line per check, then the summary."""
    checks = [
        parity.Check(
            path=c["path"],
            status=parity.CheckStatus(c["status"]),
            clone=c["clone"],
            production=c["production"],
            rule=c["rule"],
            reason=c["reason"],
        )
        for c in report["checks"]
    ]
    lines = [check.line() for check in checks]
    differing = sum(check.status == parity.CheckStatus.DIFFERS for check in checks)
    allowed = [c for c in checks if c.status == parity.CheckStatus.ALLOWED]
    verdict = "in parity" if report["in_parity"] else f"out of parity, {differing} differ"
    # The check lines keep their fixed shape; why each allowed difference is allowed goes here.
    why = "".join(f"; {c.path} allowed: {c.reason}" for c in allowed)
    lines.append(
        f"{report['account']} against {report['production']} ({report['purpose']}): "
        f"{verdict}; {len(checks)} checks, {len(allowed)} allowed{why}"
    )
    return lines


def checks_differing_first(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks for a table: what differs first, then allowed differences, then equal."""
    order = {parity.CheckStatus.DIFFERS: 0, parity.CheckStatus.ALLOWED: 1}
    return sorted(report.get("checks", []), key=lambda c: order.get(c["status"], 2))
