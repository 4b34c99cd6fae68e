"""Drift: does an account's live state still match its code? Checked on a schedule.

A drift-check run (``render`` and ``drift_plan``, never an apply) plans the account's
rendered Terraform against its live state. When it finishes, ``record_drift_check``
(a receiver of ``pipelines.signals.run_finished``, in the run's transaction) keeps what
it found as a ``DriftReport`` and tells the owner, once per change, when the account
drifted. "Reconcile" starts an update run, under the blueprint's approval policy.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import (
    BooleanField,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.utils import timezone

from accounts_app import notification_queue, services
from accounts_app.models import Account, AccountStatus, DriftReport, Purpose
from accounts_app.notifications import DRIFT_DETECTED
from pipelines.blueprints import BlueprintError, ConfigInvalid, load_blueprint
from pipelines.clients.terraform import PlanSummary
from pipelines.models import BUILDING_KINDS, PipelineRun, RunKind, RunStatus, StageStatus, Trigger
from pipelines.selectors import plan_summary_from
from pipelines.services import RunRefused, start_run

logger = logging.getLogger(__name__)

DRIFT_STAGE = "drift_plan"


# --- recording what a check found ----------------------------------------------------------


def record_drift_check(
    sender: type[PipelineRun], run: PipelineRun | None = None, **kwargs: object
) -> None:
    """Receiver of run_finished: keep a succeeded drift check's finding, tell the owner."""
    if run is None or run.kind != RunKind.DRIFT_CHECK or run.status != RunStatus.SUCCEEDED:
        return
    try:
        with transaction.atomic():  # a savepoint: a failure here never undoes the run's end
            report = record_report(run)
    except Exception:
        logger.exception("drift check of run #%s could not be recorded", run.pk)
        return
    if report is not None and report.notified:
        notification_queue.queue(event=DRIFT_DETECTED, object_id=report.pk)


def record_report(run: PipelineRun) -> DriftReport | None:
    """The DriftReport of a finished drift-check run (made once; None without a plan)."""
    existing = DriftReport.objects.filter(run=run).first()
    if existing is not None:
        return existing
    stage = run.stages.filter(kind=DRIFT_STAGE, status=StageStatus.SUCCEEDED).first()
    summary = plan_summary_from(stage.outputs) if stage is not None else None
    if stage is None or summary is None:
        return None
    drifted = bool(stage.outputs.get("drifted"))
    previous = latest_report(run.account)
    report = DriftReport(
        account=run.account,
        run=run,
        checked_at=run.finished_at or timezone.now(),
        drifted=drifted,
        summary=summary.to_dict(),
    )
    report.notified = drifted and _is_new_drift(report=report, previous=previous)
    report.save()
    return report


def signature(summary: dict[str, object]) -> frozenset[str]:
    """What a drift is: each changed resource with its action, and changed outputs."""
    plan = PlanSummary.from_dict(summary)
    changed = {f"{r.action} {r.address}" for r in plan.resources if r.action != "no-op"}
    return frozenset(changed | {f"output {name}" for name in plan.output_changes})


def _is_new_drift(*, report: DriftReport, previous: DriftReport | None) -> bool:
    """Told once per change: not when the previous check found this same drift (and no
    build since has made the account match its code again)."""
    if previous is None or not previous.drifted:
        return True
    if signature(previous.summary) != signature(report.summary):
        return True
    return _built_since(account=report.account, since=previous.checked_at)


def _builds() -> QuerySet[PipelineRun]:
    """Runs that made an account match its code again: a build that succeeded."""
    return PipelineRun.objects.filter(kind__in=BUILDING_KINDS, status=RunStatus.SUCCEEDED)


def _built_since(*, account: Account, since: datetime) -> bool:
    return _builds().filter(account=account, finished_at__gt=since).exists()


# --- reading ---------------------------------------------------------------------------------


def latest_report(account: Account) -> DriftReport | None:
    return DriftReport.objects.filter(account=account).order_by("-checked_at", "-id").first()


def current_drift(account: Account) -> DriftReport | None:
    """The drift the account has now: its latest report, when drifted and not since rebuilt."""
    return drift_now(account=account, latest=latest_report(account))


def drifted_of_row() -> Subquery:
    """For a query of accounts: whether each has drift now, as ``current_drift`` decides
    (its latest report found drift, and no build succeeded since); None: never checked."""
    rebuilt = _builds().filter(account=OuterRef("account"), finished_at__gt=OuterRef("checked_at"))
    latest = DriftReport.objects.filter(account=OuterRef("pk")).order_by("-checked_at", "-id")
    now = ExpressionWrapper(Q(drifted=True) & ~Exists(rebuilt), output_field=BooleanField())
    return Subquery(latest.annotate(drifted_now=now).values("drifted_now")[:1])


def drift_now(*, account: Account, latest: DriftReport | None) -> DriftReport | None:
    """``current_drift`` for a caller that has read the latest report already."""
    report = latest
    if report is None or not report.drifted:
        return None
    if _built_since(account=account, since=report.checked_at):
        return None
    return report


def drift_summary(report: DriftReport) -> PlanSummary:
    return PlanSummary.from_dict(report.summary)


# --- starting checks and reconciles ------------------------------------------------------------


def start_check(*, account: Account, user: User) -> PipelineRun:
    """A drift check asked for now (callers check ``permissions.can_start_run``)."""
    return services.start_account_run(account=account, kind=RunKind.DRIFT_CHECK, user=user)


def reconcile(*, account: Account, user: User) -> PipelineRun:
    """Bring a drifted account back to its code: an update run of its current config,
    whose plan goes through the blueprint's approval policy like any other.

    Callers check ``permissions.can_start_run``. RequestRefused when it has not drifted.
    """
    if current_drift(account) is None:
        raise services.RequestRefused(
            f"account {account.name} has no drift to reconcile (check for drift first)"
        )
    return services.start_account_run(account=account, kind=RunKind.UPDATE, user=user)


def due_accounts(*, now: datetime) -> list[Account]:
    """Ready clones whose purpose's ``drift_check_hours`` passed since their last check."""
    last = PipelineRun.objects.filter(account=OuterRef("pk"), kind=RunKind.DRIFT_CHECK).order_by(
        "-created_at", "-id"
    )
    ready = (
        Account.objects.filter(status=AccountStatus.READY)
        .exclude(purpose=Purpose.PRODUCTION)
        .annotate(last_check_at=Subquery(last.values("created_at")[:1]))
    )
    due: list[Account] = []
    for account in ready.order_by("pk"):
        try:
            hours = load_blueprint(account.blueprint).policy_for(account.purpose).drift_check_hours
        except BlueprintError:
            continue
        checked = account.last_check_at
        if checked is None or checked <= now - timedelta(hours=hours):
            due.append(account)
    return due


def check_due(*, now: datetime | None = None) -> list[PipelineRun]:
    """The schedule's job: a drift check of every account that is due.

    An account busy with another run is left for the next sweep: a check never waits.
    """
    started = []
    for account in due_accounts(now=now or timezone.now()):
        try:
            started.append(start_run(account, RunKind.DRIFT_CHECK, trigger=Trigger.SCHEDULE))
        except (RunRefused, BlueprintError, ConfigInvalid):
            continue
    return started
