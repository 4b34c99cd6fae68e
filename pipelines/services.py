"""Writes on runs: start one, retry a failed stage, cancel, decide an approval.

Callers check who may do what (accounts_app.permissions); these functions
check that the action makes sense in the run's current state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts_app.models import Account, AccountStatus, Purpose
from pipelines import engine, selectors
from pipelines.artifacts import DbArtifactStore
from pipelines.blueprints import Blueprint, load_blueprint
from pipelines.logs import StageLog
from pipelines.models import (
    ACTIVE_RUN_STATUSES,
    PipelineRun,
    RunKind,
    RunStatus,
    StageRun,
    StageStatus,
    Trigger,
)
from pipelines.redaction import Redactor
from pipelines.stages.render import TERRAFORM_PREFIX
from portal.errors import PortalError

DATA_STAGES = ("db_clone", "dns_cutover")
# The account's status while a run of this kind goes on (others leave it as it is).
RUN_START_STATUS: dict[str, str] = {
    RunKind.PROVISION: AccountStatus.PROVISIONING,
    RunKind.UPDATE: AccountStatus.PROVISIONING,
    RunKind.TEARDOWN: AccountStatus.TEARING_DOWN,
}


class RunRefused(PortalError):
    """The action does not fit the run's state; the message says why."""


class RunConflict(RunRefused):
    """The account already has an active run (``holder_id``); retry once it has ended."""

    def __init__(self, *, account_name: str, holder_id: int) -> None:
        super().__init__(
            f"account {account_name} already has an active run: run #{holder_id}", retryable=True
        )
        self.holder_id = holder_id


def stages_for(*, blueprint: Blueprint, kind: RunKind) -> list[str]:
    if kind in (RunKind.PROVISION, RunKind.UPDATE):
        return list(blueprint.stages)
    if kind == RunKind.REFRESH_DATA:
        if not blueprint.databases:
            raise RunRefused(f"blueprint {blueprint.name} declares no databases to refresh")
        return list(DATA_STAGES)
    if kind == RunKind.DRIFT_CHECK:
        # Never an apply: the account is held only while it renders and plans.
        return ["render", "drift_plan"]
    if kind == RunKind.TEARDOWN:
        # Rails and dry run first; clones and the sweep before the apply (an RDS clone sits
        # in the network Terraform destroys); the cloud account is closed last.
        terraform = "render" in blueprint.stages
        return [
            "teardown_checks",
            *(["render", "plan", "approve_plan"] if terraform else []),
            *(["db_teardown"] if blueprint.databases else []),
            "sweep",
            *(["apply"] if terraform else []),
            *(["close_account"] if blueprint.close_account else []),
        ]
    raise RunRefused(f"run kind {kind!r} is not supported")


def start_run(
    account: Account,
    kind: RunKind,
    *,
    user: User | None = None,
    trigger: Trigger = Trigger.USER,
    config: dict[str, Any] | None = None,
    trigger_detail: str = "",
    approval_reason: str = "",
) -> PipelineRun:
    """Create a run with one stage per blueprint stage and queue the first after commit.

    ``config``: what the run builds, when not the account's own (an update to a new
    config; the account takes it once the run succeeds). ``approval_reason``: the
    workflow asks a human to approve the plan, for that reason.
    """
    blueprint = load_blueprint(account.blueprint)
    render_of = None
    if kind == RunKind.DRIFT_CHECK:
        # A drift check compares the live state with what was last applied: its config,
        # and its Terraform as rendered then, so neither an edit not applied yet nor a
        # newer blueprint is drift.
        applied = selectors.last_applied_run(account.pk)
        if applied is not None:
            config = dict(applied.config) if config is None else config
            render_of = applied if selectors.has_stored_render(applied.pk) else None
    return _create_run(
        account=account,
        blueprint=blueprint,
        kind=kind,
        kinds=stages_for(blueprint=blueprint, kind=kind),
        user=user,
        trigger=trigger,
        config=account.config if config is None else config,
        trigger_detail=trigger_detail,
        approval_reason=approval_reason,
        production_build=False,
        render_of=render_of,
    )


def start_production_build(account: Account, *, user: User | None = None) -> PipelineRun:
    """A provision run of a production account that the portal itself builds (the local
    production of ``seed_production``), started by an operator at the command line.

    It runs the blueprint's stages but the data ones: production is where clones take
    their data from, never a clone itself. Any other run on a protected account stays
    refused (no update, refresh, teardown from the portal's pages or API).
    """
    if account.purpose != Purpose.PRODUCTION:
        raise RunRefused(f"account {account.name} is not a production account")
    blueprint = load_blueprint(account.blueprint)
    kinds = [
        k for k in stages_for(blueprint=blueprint, kind=RunKind.PROVISION) if k not in DATA_STAGES
    ]
    return _create_run(
        account=account,
        blueprint=blueprint,
        kind=RunKind.PROVISION,
        kinds=kinds,
        user=user,
        trigger=Trigger.USER,
        config=account.config,
        trigger_detail="",
        approval_reason="",
        production_build=True,
    )


def _create_run(
    *,
    account: Account,
    blueprint: Blueprint,
    kind: RunKind,
    kinds: list[str],
    user: User | None,
    trigger: Trigger,
    config: dict[str, Any],
    trigger_detail: str,
    approval_reason: str,
    production_build: bool,
    render_of: PipelineRun | None = None,
) -> PipelineRun:
    """``render_of``: a run whose stored Terraform this run uses instead of rendering (a
    drift check's); its config was checked when it ran, against its own blueprint."""
    if render_of is None:
        config = blueprint.validate_config(blueprint.config_for_account(config, name=account.name))
    try:
        with transaction.atomic():
            locked = Account.objects.select_for_update().get(pk=account.pk)
            if locked.protected and kind != RunKind.DRIFT_CHECK and not production_build:
                raise RunRefused(f"account {locked.name} is protected: it is never written to")
            holder = engine.active_run_for(locked.pk)
            if holder is not None:
                raise RunConflict(account_name=locked.name, holder_id=holder.pk)
            run = PipelineRun.objects.create(
                account=locked,
                kind=kind,
                trigger=trigger,
                trigger_detail=trigger_detail[:500],
                approval_reason=approval_reason,
                status=RunStatus.RUNNING,
                created_by=user,
                blueprint_version=(
                    render_of.blueprint_version if render_of is not None else blueprint.version
                ),
                config=config,
            )
            if render_of is not None:
                DbArtifactStore(run.pk).copy_from(run_id=render_of.pk, prefix=TERRAFORM_PREFIX)
            stages = StageRun.objects.bulk_create(
                StageRun(run=run, position=index, kind=stage_kind)
                for index, stage_kind in enumerate(kinds, start=1)
            )
            new_status = RUN_START_STATUS.get(kind)
            if new_status:
                locked.status = new_status
                locked.save(update_fields=["status", "updated_at"])
            engine.queue_stage(stages[0])
            return run
    except IntegrityError:
        # Two starts raced past the check; the database constraint decided.
        holder = engine.active_run_for(account.pk)
        if holder is None:
            raise
        raise RunConflict(account_name=account.name, holder_id=holder.pk) from None


def retry_stage(stage: StageRun, *, user: User | None = None) -> StageRun:
    """A new attempt of a failed (or cancelled) stage; the chain goes on from there.

    Refused for a failure a retry cannot help (``retryable`` false): its explanation says
    what to change instead."""
    try:
        with transaction.atomic():
            # The one lock order: account, run, stage (engine.lock_stage).
            locked = engine.lock_stage(stage.pk)
            if locked is None:
                raise RunRefused(f"stage #{stage.pk} no longer exists")
            stage = locked
            if stage.status not in (StageStatus.FAILED, StageStatus.CANCELLED):
                raise RunRefused(
                    f"stage {stage.kind} is {stage.status}; only a failed stage is retried"
                )
            if stage.status == StageStatus.FAILED and not stage.retryable:
                raise RunRefused(
                    f"a retry of {stage.kind} cannot help: {stage.explanation}", field="stage"
                )
            first = stage
            if stage.retry_from:
                first = stage.run.stages.filter(kind=stage.retry_from).first() or stage
            return _restart(run=stage.run, first=first, user=user, verb="retry")
    except IntegrityError:
        holder = engine.active_run_for(stage.run.account_id)
        raise RunConflict(
            account_name=stage.run.account.name, holder_id=holder.pk if holder else 0
        ) from None


def resume_run(run: PipelineRun, *, user: User | None = None) -> StageRun:
    """Go on with a run stopped before a stage ran (cancelled while it waited, say): from
    its first stage that has not succeeded, with the outputs already recorded."""
    try:
        with transaction.atomic():
            run = engine.lock_run(run.pk)
            first = run.stages.exclude(status=StageStatus.SUCCEEDED).order_by("position").first()
            if first is None or first.status == StageStatus.FAILED:
                what = "every stage succeeded" if first is None else f"{first.kind} failed"
                raise RunRefused(f"run #{run.pk} cannot resume: {what}")
            if first.status not in (StageStatus.CANCELLED, StageStatus.SKIPPED):
                raise RunRefused(f"run #{run.pk} cannot resume: {first.kind} is {first.status}")
            return _restart(run=run, first=first, user=user, verb="resume")
    except IntegrityError:
        holder = engine.active_run_for(run.account_id)
        raise RunConflict(
            account_name=run.account.name, holder_id=holder.pk if holder else 0
        ) from None


def resumable_stage(run: PipelineRun) -> StageRun | None:
    """The stage a Resume starts from: the run stopped before it ran (None: no resume)."""
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        return None
    first = next((s for s in run.stages.all() if s.status != StageStatus.SUCCEEDED), None)
    if first is None or first.status not in (StageStatus.CANCELLED, StageStatus.SKIPPED):
        return None
    return first


def _restart(*, run: PipelineRun, first: StageRun, user: User | None, verb: str) -> StageRun:
    """Run ``run`` again from ``first`` (locked by the caller); every later stage pending."""
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise RunRefused(f"run #{run.pk} is {run.status}")
    if run.account.protected:
        raise RunRefused(f"account {run.account.name} is protected: it is never written to")
    newer = run.account.runs.filter(created_at__gt=run.created_at).first()
    if newer is not None:
        raise RunRefused(f"run #{newer.pk} is newer; {verb} that one")
    holder = engine.active_run_for(run.account_id)
    if holder is not None:
        raise RunConflict(account_name=run.account.name, holder_id=holder.pk)
    run.status = RunStatus.RUNNING
    run.cancel_requested = False
    run.explanation = ""
    run.finished_at = None
    run.trigger = Trigger.RETRY
    run.save()
    # Everything after the first stage to run again goes back to pending.
    run.stages.filter(position__gt=first.position).update(
        status=StageStatus.PENDING, finished_at=None, explanation=""
    )
    first.refresh_from_db()
    who = getattr(user, "username", "") or "the portal"
    StageLog(first.pk, first.attempt + 1, Redactor())(f"--- {verb} requested by {who} ---")
    engine.queue_stage(first)
    new_status = RUN_START_STATUS.get(run.kind)
    if new_status:
        Account.objects.filter(pk=run.account_id).update(status=new_status)
    return first


def cancel_run(run: PipelineRun, *, user: User | None = None) -> PipelineRun:
    """Queued stages are cancelled; a running one is asked to stop and stops at its next check."""
    with transaction.atomic():
        run = engine.lock_run(run.pk)
        if run.status not in ACTIVE_RUN_STATUSES:
            raise RunRefused(f"run #{run.pk} is {run.status}; only an active run is cancelled")
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested"])
        engine.cancel_remaining(run)
        if not run.stages.filter(status=StageStatus.RUNNING).exists():
            engine.finish_run(run, status=RunStatus.CANCELLED, explanation="cancelled by a user")
        return run


def decide_stage(stage: StageRun, *, user: User, approve: bool, comment: str = "") -> StageRun:
    """Approve or reject a stage waiting for approval (a plan)."""
    with transaction.atomic():
        locked = engine.lock_stage(stage.pk)
        if locked is None:
            raise RunRefused(f"stage #{stage.pk} no longer exists")
        stage = locked
        if stage.status != StageStatus.WAITING_APPROVAL:
            raise RunRefused(f"stage {stage.kind} is {stage.status}, not waiting for approval")
        if stage.approval_deadline and stage.approval_deadline < timezone.now():
            raise RunRefused("the approval deadline has passed")
        if not approve and not comment.strip():
            raise RunRefused("a rejection needs a comment saying why", field="comment")
        if (
            approve
            and stage.run.created_by_id == user.pk
            and not settings.PORTAL_ALLOW_SELF_APPROVAL
        ):
            raise RunRefused(
                f"run #{stage.run_id} was started by you: another approver decides its plan"
            )
        stage.decided_by = user
        stage.decided_at = timezone.now()
        stage.decision_comment = comment.strip()
        log = StageLog(stage.pk, stage.attempt, Redactor())
        who = getattr(user, "username", "")
        decision: dict[str, Any] = {"decision": "approved" if approve else "rejected", "by": who}
        stage.outputs = {**stage.outputs, **decision, "comment": stage.decision_comment}
        if approve:
            log(f"--- approved by {who}: {stage.decision_comment or 'no comment'} ---")
            stage.status = StageStatus.SUCCEEDED
            stage.finished_at = timezone.now()
            stage.save()
            engine.advance(stage.run, after=stage)
        else:
            log(f"--- rejected by {who}: {stage.decision_comment} ---")
            explanation = f"rejected by {who}: {stage.decision_comment}"
            # A retry plans again and asks again, rather than applying what was refused.
            stage.retry_from = "plan" if stage.run.stages.filter(kind="plan").exists() else ""
            stage.status = StageStatus.FAILED
            stage.explanation = explanation
            stage.finished_at = timezone.now()
            stage.save()
            engine.finish_run(
                stage.run, status=RunStatus.FAILED, explanation=f"{stage.kind}: {explanation}"
            )
        return stage


def expire_accounts(now: datetime | None = None) -> list[PipelineRun]:
    """Start a teardown run for every unprotected account past its expiry date."""
    now = now or timezone.now()
    expired = Account.objects.filter(
        expires_at__lt=now,
        protected=False,
        expiry_exempt=False,
        status__in=[AccountStatus.READY, AccountStatus.FAILED],
    ).exclude(runs__status__in=ACTIVE_RUN_STATUSES)
    started = []
    for account in expired:
        try:
            started.append(start_run(account, RunKind.TEARDOWN, trigger=Trigger.EXPIRED))
        except RunRefused:
            continue  # a run started meanwhile; the next sweep looks again
    return started
