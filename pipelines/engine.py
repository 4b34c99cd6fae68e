"""The stage engine: the state machine of runs and stages.

One Celery task runs one stage (``execute_stage``). A queued stage is claimed by
one statement whose status check makes a duplicate delivery a no-op; a redelivery
that may take over a lost worker's stage, or a stage of a cancelled run, is decided
under the locks. The stage beats while it runs; on success the next stage is queued
through the outbox, sent once the transaction commits. ``pipelines.reaper`` fails
stages whose worker died.

Lock order, everywhere: the account row, then the run, then the stage
(``lock_run``, ``lock_stage``); two transactions that follow it cannot deadlock. The
one-statement claim and the heartbeat lock a stage row alone and wait for nothing
else while they hold it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Subquery
from django.utils import timezone

from accounts_app.models import Account, AccountStatus
from accounts_app.records import (
    AccountRecords,
    decrypted_secrets,
    record_on_account,
    record_torn_down,
    secret_values,
)
from pipelines import outbox, rows
from pipelines.artifacts import DbArtifactStore
from pipelines.blueprints import load_blueprint
from pipelines.dbretry import retrying
from pipelines.logs import StageLog
from pipelines.models import (
    ACTIVE_RUN_STATUSES,
    LogLine,
    PipelineRun,
    RunKind,
    RunStatus,
    StageRun,
    StageStatus,
    Trigger,
)
from pipelines.outcomes import Cancelled, Failed, Outcome, Succeeded, Waiting, run_executor
from pipelines.periodic import SharedTicker
from pipelines.redaction import Redactor, environment_secrets
from pipelines.signals import approval_needed, run_finished
from pipelines.stages import executor_for
from pipelines.stages.base import AccountInfo, StageContext

logger = logging.getLogger(__name__)

# The Celery task that runs one stage (pipelines/tasks.py registers it under this name).
RUN_STAGE_TASK = "pipelines.tasks.run_stage"
WORKER_LOST = "worker lost"
CANCELLED_BY_USER = "cancelled by a user"


# --- locks ------------------------------------------------------------------------------


def lock_run(run_id: int) -> PipelineRun:
    """Lock the run's account, then the run; return the run."""
    _lock_account(PipelineRun.objects.filter(pk=run_id).values("account_id"))
    return PipelineRun.objects.select_for_update().select_related("account").get(pk=run_id)


def lock_stage(stage_id: int) -> StageRun | None:
    """Lock the stage's account, then its run and the stage; None if it is gone."""
    return rows.lock_stage(stage_id)


def _lock_account(account_id: QuerySet[Any, Any]) -> bool:
    """Lock the account whose id the one-row ``account_id`` query gives; False if none."""
    locked = Account.objects.select_for_update().filter(pk=Subquery(account_id[:1]))
    return bool(list(locked.order_by().values_list("pk", flat=True)))


# --- queueing ---------------------------------------------------------------------------


def queue_stage(stage: StageRun) -> None:
    """Mark a stage queued (a new attempt) and send its task once the transaction commits."""
    stage.status = StageStatus.QUEUED
    stage.attempt += 1
    stage.queued_at = timezone.now()
    stage.started_at = stage.finished_at = stage.heartbeat_at = None
    stage.error = stage.explanation = stage.worker = ""
    stage.retryable = True
    stage.retry_from = ""
    # A new attempt asks afresh: no earlier decision or deadline carries over.
    stage.decided_by = stage.decided_at = stage.approval_deadline = None
    stage.decision_comment = ""
    rows.save_stage(stage)
    send_stage_task(stage.pk)


def send_stage_task(stage_id: int) -> None:
    outbox.send_after_commit(RUN_STAGE_TASK, stage_id)


# --- executing --------------------------------------------------------------------------


def execute_stage(stage_id: int) -> None:
    """Run one stage, if it is still queued. The body of the Celery task."""
    claimed = _claim(stage_id)
    if claimed is None:
        return
    stage = claimed.stage
    account = stage.run.account
    secrets = (
        secret_values(account.pk)
        if claimed.secret_ciphertexts is None
        else decrypted_secrets(claimed.secret_ciphertexts)
    )
    redactor = Redactor([*portal_secrets(), *secrets, *sensitive_output_values(account)])
    log = StageLog(stage.pk, stage.attempt, redactor, last_number=claimed.last_log_number)
    # The header goes out with the stage's first line, or its outcome, in one INSERT; a
    # stage silent for longer shows it at its first heartbeat.
    log.hold(until_next_line=True)
    heartbeat = Heartbeat(
        stage_id=stage.pk, attempt=stage.attempt, run_id=stage.run_id, flush_log=log.flush
    )
    workdir = (
        Path(settings.PORTAL_WORK_DIR)
        / f"run-{stage.run_id}"
        / (f"{stage.position:02d}-{stage.kind}-attempt-{stage.attempt}")
    )
    heartbeat.start()
    try:
        outcome = run_executor(
            lambda: executor_for(stage.kind)(
                _context(
                    stage,
                    previous=claimed.previous,
                    log=log,
                    redactor=redactor,
                    heartbeat=heartbeat,
                    workdir=workdir,
                )
            ),
            log=log,
            redact=redactor,
        )
    finally:
        heartbeat.stop()
    # The lines not written yet go in the outcome's transaction.
    kept = log.take_held()
    # A dropped connection must not lose a finished stage's result: try again, reconnected.
    retrying(
        lambda: _record_outcome(
            stage_id=stage.pk, attempt=stage.attempt, outcome=outcome, log=log, kept=kept
        ),
        what=f"recording stage {stage.pk}",
    )
    if not settings.PORTAL_KEEP_WORKDIRS and isinstance(outcome, Succeeded):
        shutil.rmtree(workdir, ignore_errors=True)


def run_here(
    run_id: int, *, poll_s: float = 0.5, on_wait: Callable[[StageRun], None] | None = None
) -> PipelineRun:
    """Execute the run's stages in this process, one after another, until the run ends or
    waits for an approver; returns the run as it is then.

    For commands that must finish before any worker runs (``seed_production`` under
    ``make up``). The stage messages still go to the broker: a worker that claims a
    stage first runs it and this waits (``on_wait`` is told); a stage this process
    claims is no longer queued when the worker gets its message, so it does nothing.
    A stage left running by a process that died (a killed earlier call) is taken over.
    """
    while True:
        run = PipelineRun.objects.get(pk=run_id)
        if run.status not in ACTIVE_RUN_STATUSES or run.status == RunStatus.WAITING_APPROVAL:
            return run
        stage = (
            run.stages.filter(status__in=[StageStatus.QUEUED, StageStatus.RUNNING])
            .order_by("position")
            .first()
        )
        if stage is not None and (stage.status == StageStatus.QUEUED or worker_gone(stage) is True):
            execute_stage(stage.pk)
            continue
        if stage is not None and on_wait is not None:
            on_wait(stage)
        time.sleep(poll_s)


def _context(
    stage: StageRun,
    *,
    previous: dict[str, dict[str, Any]],
    log: StageLog,
    redactor: Redactor,
    heartbeat: Heartbeat,
    workdir: Path,
) -> StageContext:
    run = stage.run
    account = run.account
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    log(f"--- {stage.kind}, attempt {stage.attempt}, on {stage.worker} ---")
    return StageContext(
        account=AccountInfo.of(account, config=run.config),
        run_id=run.pk,
        run_kind=RunKind(run.kind),
        stage_id=stage.pk,
        stage_kind=stage.kind,
        attempt=stage.attempt,
        blueprint=load_blueprint(account.blueprint),
        config=dict(run.config),
        previous=previous,
        workdir=workdir,
        log=log,
        hold_log=log.hold,
        flush_log=log.flush,
        add_secret=redactor.add,
        is_cancelled=heartbeat.cancelled.is_set,
        artifacts=DbArtifactStore(run.pk),
        records=AccountRecords(account.pk),
        trigger=Trigger(run.trigger),
        redact=redactor,
        on_process_start=lambda pid: _record_process_group(
            stage_id=stage.pk, attempt=stage.attempt, pid=pid
        ),
        approval_reason=run.approval_reason,
        blueprint_version=run.blueprint_version,
    )


def portal_secrets() -> list[str]:
    """The portal's own credentials, redacted from every stage's log."""
    return environment_secrets(
        database_password=str(settings.DATABASES["default"].get("PASSWORD") or ""),
        broker_url=settings.CELERY_BROKER_URL,
        secret_key=settings.SECRET_KEY,
        connection_urls=settings.PORTAL_CONNECTIONS.values(),
        aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY,
        aws_session_token=settings.AWS_SESSION_TOKEN,
    )


class _Busy:
    """What ``_claim_locked`` says while a lost attempt's processes still run."""


_BUSY = _Busy()


def _claim(stage_id: int) -> rows.Claimed | None:
    """Claim the stage: in one statement when it is queued, as it nearly always is; else
    (a redelivery, a takeover, a cancelled run, nothing to do) under the locks."""
    claimed = retrying(
        lambda: rows.claim_queued(stage_id=stage_id, worker=this_worker(), now=timezone.now()),
        what=f"claiming stage {stage_id}",
    )
    if claimed is not None:
        return claimed
    stage = _claim_when_free(stage_id)
    if stage is None:
        return None
    return rows.Claimed(
        stage=stage,
        last_log_number=None,
        previous=_previous_outputs(stage),
        secret_ciphertexts=None,
    )


def _claim_when_free(stage_id: int) -> StageRun | None:
    """Claim the stage. A killed worker's Terraform may still be saving its state (it is
    interrupted and given the grace period, see ``clients.process``): while it runs, wait,
    unlocked, up to that grace, before this delivery may take the stage over, so two
    attempts never overlap."""
    deadline = time.monotonic() + settings.PORTAL_TERRAFORM_GRACE_SECONDS + 5
    while True:
        claimed = retrying(
            lambda: _claim_locked(stage_id, wait_for_lost=time.monotonic() < deadline),
            what=f"claiming stage {stage_id}",
        )
        if not isinstance(claimed, _Busy):
            return claimed
        time.sleep(0.2)


def _claim_locked(stage_id: int, *, wait_for_lost: bool) -> StageRun | _Busy | None:
    with transaction.atomic():
        stage = lock_stage(stage_id)
        if stage is None:
            logger.info("stage %s is gone: nothing to do", stage_id)
            return None
        now = timezone.now()
        if stage.status == StageStatus.RUNNING and wait_for_lost and _lost_attempt_runs(stage):
            return _BUSY
        if stage.status == StageStatus.RUNNING and worker_lost(stage, now=now):
            # A redelivered message (the worker was stopped or killed): take the stage over.
            StageLog(stage.pk, stage.attempt, Redactor())(
                f"--- {WORKER_LOST}: {stage.worker} is gone; taken over ---"
            )
            stage.attempt += 1
        elif stage.status != StageStatus.QUEUED:
            logger.info("stage %s is not queued (%s): nothing to do", stage_id, stage.status)
            return None
        if stage.run.cancel_requested:
            _finish_stage(stage, status=StageStatus.CANCELLED, explanation=CANCELLED_BY_USER)
            finish_run(stage.run, status=RunStatus.CANCELLED, explanation=CANCELLED_BY_USER)
            return None
        stage.status = StageStatus.RUNNING
        stage.started_at = stage.heartbeat_at = now
        stage.worker = this_worker()
        stage.process_group = None
        stage.save()
        return stage


def _lost_attempt_runs(stage: StageRun) -> bool:
    """The stage's worker, on this host, is gone, but the process group it started is not."""
    return _worker_pid_gone(stage.worker) is True and not _group_gone(stage)


def _record_process_group(*, stage_id: int, attempt: int, pid: int) -> None:
    """``on_process_start`` of the stage's context: the runner's guard leads the group."""
    retrying(
        lambda: StageRun.objects.filter(pk=stage_id, attempt=attempt).update(process_group=pid),
        what=f"recording the process of stage {stage_id}",
    )


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_lost(stage: StageRun, *, now: datetime) -> bool:
    """Whether a running stage's worker is gone: its process has ended (known on its own
    host), or, on another host, its heartbeat is stale."""
    gone = worker_gone(stage)
    if gone is not None:
        return gone
    stale = now - timedelta(seconds=settings.PORTAL_HEARTBEAT_STALE_SECONDS)
    return stage.heartbeat_at is not None and stage.heartbeat_at < stale


def worker_gone(stage: StageRun) -> bool | None:
    """Whether the stage's process ``host:pid``, and the child process group it started,
    no longer run: None when that is not known here (no worker recorded, another host).
    This very process counts as gone: a prefork child runs one task at a time, so while
    it claims or reaps, no attempt of its own runs (one whose claim committed just
    before its connection broke)."""
    gone = _worker_pid_gone(stage.worker)
    return gone and _group_gone(stage) if gone is not None else None


def _worker_pid_gone(worker: str) -> bool | None:
    host, _, pid = worker.rpartition(":")
    if not pid.isdigit() or host != socket.gethostname():
        return None
    if int(pid) == os.getpid():
        return True
    return not _exists(lambda: os.kill(int(pid), 0))


def _group_gone(stage: StageRun) -> bool:
    group = stage.process_group
    return group is None or not _exists(lambda: os.killpg(group, 0))


def _exists(probe: Callable[[], None]) -> bool:
    try:
        probe()
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def sensitive_output_values(account: Account) -> list[str]:
    """Sensitive Terraform outputs recorded on the account, as text and as JSON."""
    values = []
    for output in account.outputs.values():
        if output.get("sensitive") and output.get("value") is not None:
            value = output["value"]
            values.append(json.dumps(value))
            if isinstance(value, str):
                values.append(value)
    return values


def _previous_outputs(stage: StageRun) -> dict[str, dict[str, Any]]:
    earlier = StageRun.objects.filter(
        run_id=stage.run_id, position__lt=stage.position, status=StageStatus.SUCCEEDED
    ).values_list("kind", "outputs")
    return {kind: outputs for kind, outputs in earlier}


def _record_outcome(
    *,
    stage_id: int,
    attempt: int,
    outcome: Outcome,
    log: StageLog,
    kept: list[LogLine] | None = None,
) -> None:
    """Record the attempt's outcome. ``kept``: its lines not written yet (``take_held``)."""
    with transaction.atomic():
        # The stage's last lines and the outcome's go in one INSERT in this transaction;
        # tried again, it writes them again.
        log.hold(kept=kept)
        _decide(stage_id=stage_id, attempt=attempt, outcome=outcome, log=log)
        log.release()


def _decide(*, stage_id: int, attempt: int, outcome: Outcome, log: StageLog) -> None:
    """Record the attempt's outcome on its stage and run (in the caller's transaction)."""
    stage = lock_stage(stage_id)
    if stage is None or stage.status != StageStatus.RUNNING or stage.attempt != attempt:
        # The reaper or a user got here first; their word stands.
        status = stage.status if stage else "gone"
        log(f"stage already {status}; result of attempt {attempt} discarded")
        return
    run = stage.run
    match outcome:
        case Succeeded(outputs=outputs):
            stage.outputs = outputs
            _finish_stage(stage, status=StageStatus.SUCCEEDED, explanation="")
            log(f"--- {stage.kind} succeeded ---")
            advance(run, after=stage)
        case Waiting(outputs=outputs, timeout_hours=hours):
            stage.outputs = outputs
            stage.approval_deadline = timezone.now() + timedelta(hours=hours)
            stage.status = StageStatus.WAITING_APPROVAL
            stage.save()
            run.status = RunStatus.WAITING_APPROVAL
            run.save(update_fields=["status"])
            log("--- waiting for approval ---")
            # In the transaction: what the receivers queue commits with the stage.
            approval_needed.send(sender=StageRun, stage=stage)
        case Cancelled(explanation=explanation):
            log(f"--- cancelled: {explanation} ---")
            _finish_stage(stage, status=StageStatus.CANCELLED, explanation=explanation)
            cancel_remaining(run)
            finish_run(run, status=RunStatus.CANCELLED, explanation=explanation)
        case Failed() if run.cancel_requested:
            # Stopped because a user cancelled (a hook killed, say): cancelled, not failed.
            log(f"--- cancelled: {CANCELLED_BY_USER} ({outcome.explanation}) ---")
            _finish_stage(stage, status=StageStatus.CANCELLED, explanation=CANCELLED_BY_USER)
            cancel_remaining(run)
            finish_run(run, status=RunStatus.CANCELLED, explanation=CANCELLED_BY_USER)
        case Failed():
            stage.retryable = outcome.retryable
            stage.retry_from = outcome.retry_from
            stage.error = outcome.detail
            log(f"--- {stage.kind} failed: {outcome.explanation} ---")
            _finish_stage(stage, status=StageStatus.FAILED, explanation=outcome.explanation)
            finish_run(
                run, status=RunStatus.FAILED, explanation=f"{stage.kind}: {outcome.explanation}"
            )


def _finish_stage(stage: StageRun, *, status: StageStatus, explanation: str) -> None:
    stage.status = status
    stage.explanation = explanation
    stage.finished_at = timezone.now()
    rows.save_stage(stage)


def fail_stage(stage: StageRun, *, explanation: str) -> None:
    """Fail a stage and its run (the reaper: a lost worker, an approval past its deadline)."""
    if stage.run.cancel_requested:
        _finish_stage(stage, status=StageStatus.CANCELLED, explanation=CANCELLED_BY_USER)
        cancel_remaining(stage.run)
        finish_run(stage.run, status=RunStatus.CANCELLED, explanation=CANCELLED_BY_USER)
        return
    _finish_stage(stage, status=StageStatus.FAILED, explanation=explanation)
    finish_run(stage.run, status=RunStatus.FAILED, explanation=f"{stage.kind}: {explanation}")


def advance(run: PipelineRun, *, after: StageRun) -> None:
    """Queue the stage after ``after``, or finish the run when there is none."""
    if run.cancel_requested:
        cancel_remaining(run)
        finish_run(run, status=RunStatus.CANCELLED, explanation=CANCELLED_BY_USER)
        return
    following = rows.next_stage(run_id=run.pk, after_position=after.position)
    if following is None:
        finish_run(run, status=RunStatus.SUCCEEDED, explanation="")
        return
    if run.status != RunStatus.RUNNING:
        run.status = RunStatus.RUNNING
        run.save(update_fields=["status"])
    queue_stage(following)


def cancel_remaining(run: PipelineRun) -> None:
    """A queued stage or one waiting for a decision is cancelled; those after it are skipped."""
    run.stages.filter(status__in=[StageStatus.QUEUED, StageStatus.WAITING_APPROVAL]).update(
        status=StageStatus.CANCELLED, finished_at=timezone.now()
    )
    skip_remaining(run)


def skip_remaining(run: PipelineRun) -> None:
    """Stages that never ran because an earlier one failed or was cancelled."""
    run.stages.filter(status=StageStatus.PENDING).update(
        status=StageStatus.SKIPPED, finished_at=timezone.now()
    )


def finish_run(run: PipelineRun, *, status: RunStatus, explanation: str) -> None:
    if status in (RunStatus.FAILED, RunStatus.CANCELLED):
        skip_remaining(run)
    run.status = status
    run.explanation = explanation
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "explanation", "finished_at"])
    new_account_status = _account_status_after(kind=run.kind, run_status=status)
    if new_account_status == AccountStatus.TORN_DOWN:
        record_torn_down(run.account_id)
    elif new_account_status:
        record_on_account(run.account_id, status=new_account_status)
    # In the transaction: what the receivers queue (notifications) commits with the run.
    run_finished.send(sender=PipelineRun, run=run)


def _account_status_after(*, kind: str, run_status: RunStatus) -> AccountStatus | None:
    if kind == RunKind.REFRESH_DATA or kind == RunKind.DRIFT_CHECK:
        return None  # the account kept serving throughout
    if kind == RunKind.TEARDOWN:
        return (
            AccountStatus.TORN_DOWN if run_status == RunStatus.SUCCEEDED else AccountStatus.FAILED
        )
    if run_status == RunStatus.SUCCEEDED:
        return AccountStatus.READY
    return AccountStatus.FAILED


# --- heartbeats -------------------------------------------------------------------------


class Heartbeat:
    """Beats for a running stage, and notices when its run is asked to stop (on the
    process's one heartbeat thread, ``_BEATS``)."""

    def __init__(
        self,
        *,
        stage_id: int,
        attempt: int,
        run_id: int,
        flush_log: Callable[[], None] | None = None,
    ) -> None:
        self.interval = float(settings.PORTAL_HEARTBEAT_SECONDS)
        self.stage_id = stage_id
        self.attempt = attempt
        self.run_id = run_id
        # Lines the stage's log still keeps are written at each beat at the latest.
        self.flush_log = flush_log
        self.cancelled = threading.Event()

    def start(self) -> None:
        _BEATS.add(self)

    def stop(self) -> None:
        """No beat of this heartbeat runs once this returns."""
        _BEATS.remove(self)

    def tick(self) -> None:
        if self.flush_log is not None:
            self.flush_log()
        self.beat()

    def beat(self, now: datetime | None = None) -> None:
        still_running = StageRun.objects.filter(
            pk=self.stage_id, attempt=self.attempt, status=StageStatus.RUNNING
        ).update(heartbeat_at=now or timezone.now())
        cancel = PipelineRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()
        if cancel or not still_running:
            self.cancelled.set()


_BEATS = SharedTicker(name="heartbeats")


def active_run_for(account_id: int) -> PipelineRun | None:
    return PipelineRun.objects.filter(account_id=account_id, status__in=ACTIVE_RUN_STATUSES).first()
