"""The stage engine: the state machine of runs and stages.

One Celery task runs one stage (``execute_stage``). A stage is claimed with a
row lock and a status check, so a duplicate delivery is a no-op; it beats while
it runs; on success the next stage is queued after the transaction commits. A
periodic reaper fails stages whose worker died and re-sends lost messages.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from accounts_app.models import Account, AccountStatus
from accounts_app.records import AccountRecords, record_on_account, secret_values
from pipelines.artifacts import DbArtifactStore
from pipelines.blueprints import load_blueprint
from pipelines.logs import StageLog
from pipelines.models import (
    ACTIVE_RUN_STATUSES,
    FINISHED_STAGE_STATUSES,
    PipelineRun,
    RunKind,
    RunStatus,
    StageRun,
    StageStatus,
)
from pipelines.redaction import Redactor, environment_secrets
from pipelines.signals import approval_needed, run_finished
from pipelines.stages import executor_for
from pipelines.stages.base import (
    AccountInfo,
    StageCancelled,
    StageContext,
    StageError,
    StageWaiting,
)

logger = logging.getLogger(__name__)

WORKER_LOST = "worker lost"


# --- queueing -------------------------------------------------------------------------


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
    stage.save()
    send_stage_task(stage.pk)


def send_stage_task(stage_id: int) -> None:
    from pipelines.tasks import run_stage

    transaction.on_commit(lambda: run_stage.delay(stage_id))


# --- executing ------------------------------------------------------------------------


def execute_stage(stage_id: int) -> None:
    """Run one stage, if it is still queued. The body of the Celery task."""
    stage = _claim(stage_id)
    if stage is None:
        return
    run = stage.run
    account = run.account
    portal_secrets = environment_secrets(
        database_password=str(settings.DATABASES["default"].get("PASSWORD") or ""),
        broker_url=settings.CELERY_BROKER_URL,
        secret_key=settings.SECRET_KEY,
        connection_urls=settings.PORTAL_CONNECTIONS.values(),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN", ""),
    )
    redactor = Redactor(
        [*portal_secrets, *secret_values(account.pk), *sensitive_output_values(account)]
    )
    log = StageLog(stage.pk, stage.attempt, redactor)
    heartbeat = Heartbeat(stage.pk, stage.attempt, run.pk)
    workdir = (
        Path(settings.PORTAL_WORK_DIR)
        / f"run-{run.pk}"
        / (f"{stage.position:02d}-{stage.kind}-attempt-{stage.attempt}")
    )
    outcome: dict[str, Any] = {}
    try:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        log(f"--- {stage.kind}, attempt {stage.attempt}, on {stage.worker} ---")
        blueprint = load_blueprint(account.blueprint)
        ctx = StageContext(
            account=AccountInfo(
                pk=account.pk,
                name=account.name,
                purpose=account.purpose,
                cloud_account_id=account.cloud_account_id,
                config=dict(run.config),
                outputs=dict(account.outputs),
            ),
            run_id=run.pk,
            run_kind=run.kind,
            stage_id=stage.pk,
            stage_kind=stage.kind,
            attempt=stage.attempt,
            blueprint=blueprint,
            config=dict(run.config),
            previous=_previous_outputs(stage),
            workdir=workdir,
            log=log,
            add_secret=redactor.add,
            redact=redactor,
            is_cancelled=heartbeat.cancelled.is_set,
            artifacts=DbArtifactStore(run.pk),
            records=AccountRecords(account.pk),
            trigger=run.trigger,
        )
        heartbeat.start()
        outcome = {"outputs": executor_for(stage.kind)(ctx)}
    except StageWaiting as waiting:
        outcome = {"waiting": waiting}
    except StageCancelled as cancelled:
        outcome = {"cancelled": cancelled.explanation}
    except StageError as error:
        if error.detail:
            log(error.detail)
        outcome = {"error": error}
    except Exception as exc:  # noqa: BLE001 - any bug must still fail the stage, not leave it running
        log(traceback.format_exc())
        outcome = {"error": StageError(redactor(f"internal error: {type(exc).__name__}: {exc}"))}
    finally:
        heartbeat.stop()
    _record_outcome(stage.pk, stage.attempt, outcome, log, redactor)
    if not settings.PORTAL_KEEP_WORKDIRS and "outputs" in outcome:
        shutil.rmtree(workdir, ignore_errors=True)


def _claim(stage_id: int) -> StageRun | None:
    with transaction.atomic():
        stage = (
            StageRun.objects.select_for_update()
            .select_related("run__account")
            .filter(pk=stage_id)
            .first()
        )
        if stage is None or stage.status != StageStatus.QUEUED:
            logger.info(
                "stage %s is not queued (%s): nothing to do", stage_id, stage and stage.status
            )
            return None
        if stage.run.cancel_requested:
            _finish_stage(stage, StageStatus.CANCELLED, "cancelled by a user")
            finish_run(stage.run, RunStatus.CANCELLED, "cancelled by a user")
            return None
        now = timezone.now()
        stage.status = StageStatus.RUNNING
        stage.started_at = stage.heartbeat_at = now
        stage.worker = f"{socket.gethostname()}:{os.getpid()}"
        stage.save()
        return stage


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
    stage_id: int, attempt: int, outcome: dict[str, Any], log: StageLog, redactor: Redactor
) -> None:
    with transaction.atomic():
        stage = StageRun.objects.select_for_update().select_related("run").get(pk=stage_id)
        if stage.status != StageStatus.RUNNING or stage.attempt != attempt:
            # The reaper or a user got here first; their word stands.
            log(f"stage already {stage.status}; result of attempt {attempt} discarded")
            return
        run = stage.run
        if "outputs" in outcome:
            stage.outputs = outcome["outputs"] or {}
            _finish_stage(stage, StageStatus.SUCCEEDED, "")
            log(f"--- {stage.kind} succeeded ---")
            advance(run, after=stage)
        elif "waiting" in outcome:
            waiting: StageWaiting = outcome["waiting"]
            stage.outputs = waiting.outputs
            stage.approval_deadline = timezone.now() + timedelta(hours=waiting.timeout_hours)
            stage.status = StageStatus.WAITING_APPROVAL
            stage.save()
            run.status = RunStatus.WAITING_APPROVAL
            run.save(update_fields=["status"])
            log("--- waiting for approval ---")
            transaction.on_commit(
                lambda: approval_needed.send(
                    sender=StageRun, stage=StageRun.objects.get(pk=stage_id)
                )
            )
        elif "cancelled" in outcome:
            log(f"--- cancelled: {outcome['cancelled']} ---")
            _finish_stage(stage, StageStatus.CANCELLED, outcome["cancelled"])
            cancel_remaining(run)
            finish_run(run, RunStatus.CANCELLED, outcome["cancelled"])
        else:
            error: StageError = outcome["error"]
            explanation = (
                redactor(error.explanation).splitlines()[0][:1000]
                if error.explanation
                else "failed"
            )
            stage.retryable = error.retryable
            stage.retry_from = error.retry_from
            stage.error = redactor(error.detail)[-4000:]
            log(f"--- {stage.kind} failed: {explanation} ---")
            _finish_stage(stage, StageStatus.FAILED, explanation)
            finish_run(run, RunStatus.FAILED, f"{stage.kind}: {explanation}")


def _finish_stage(stage: StageRun, status: str, explanation: str) -> None:
    stage.status = status
    stage.explanation = explanation
    stage.finished_at = timezone.now()
    stage.save()


def advance(run: PipelineRun, *, after: StageRun) -> None:
    """Queue the stage after ``after``, or finish the run when there is none."""
    if run.cancel_requested:
        cancel_remaining(run)
        finish_run(run, RunStatus.CANCELLED, "cancelled by a user")
        return
    following = (
        run.stages.filter(position__gt=after.position).exclude(status=StageStatus.SKIPPED).first()
    )
    if following is None:
        finish_run(run, RunStatus.SUCCEEDED, "")
        return
    if run.status != RunStatus.RUNNING:
        run.status = RunStatus.RUNNING
        run.save(update_fields=["status"])
    queue_stage(following)


def cancel_remaining(run: PipelineRun) -> None:
    run.stages.filter(
        status__in=[StageStatus.PENDING, StageStatus.QUEUED, StageStatus.WAITING_APPROVAL]
    ).update(status=StageStatus.CANCELLED, finished_at=timezone.now())


def finish_run(run: PipelineRun, status: str, explanation: str) -> None:
    run.status = status
    run.explanation = explanation
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "explanation", "finished_at"])
    new_account_status = _account_status_after(run.kind, status)
    if new_account_status:
        record_on_account(run.account_id, status=new_account_status)
    run_id = run.pk
    transaction.on_commit(
        lambda: run_finished.send(sender=PipelineRun, run=PipelineRun.objects.get(pk=run_id))
    )


def _account_status_after(kind: str, run_status: str) -> str | None:
    if kind == RunKind.REFRESH_DATA or kind == RunKind.DRIFT_CHECK:
        return None  # the account kept serving throughout
    if kind == RunKind.TEARDOWN:
        return (
            AccountStatus.TORN_DOWN if run_status == RunStatus.SUCCEEDED else AccountStatus.FAILED
        )
    if run_status == RunStatus.SUCCEEDED:
        return AccountStatus.READY
    return AccountStatus.FAILED


# --- heartbeats and the reaper ------------------------------------------------------------


class Heartbeat:
    """Beats for a running stage, and notices when its run is asked to stop."""

    def __init__(self, stage_id: int, attempt: int, run_id: int) -> None:
        self.stage_id = stage_id
        self.attempt = attempt
        self.run_id = run_id
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{stage_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(settings.PORTAL_HEARTBEAT_SECONDS):
                self.beat()
        finally:
            connection.close()

    def beat(self) -> None:
        close_old_connections()
        still_running = StageRun.objects.filter(
            pk=self.stage_id, attempt=self.attempt, status=StageStatus.RUNNING
        ).update(heartbeat_at=timezone.now())
        cancel = PipelineRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()
        if cancel or not still_running:
            self.cancelled.set()


def reap(now: Any = None) -> dict[str, int]:
    """Fail stages whose worker died, re-send lost messages, expire old approvals."""
    now = now or timezone.now()
    counts = {"lost": 0, "resent": 0, "expired": 0}
    stale = now - timedelta(seconds=settings.PORTAL_HEARTBEAT_STALE_SECONDS)
    for stage_id in StageRun.objects.filter(
        status=StageStatus.RUNNING, heartbeat_at__lt=stale
    ).values_list("pk", flat=True):
        with transaction.atomic():
            stage = StageRun.objects.select_for_update().select_related("run").get(pk=stage_id)
            if (
                stage.status != StageStatus.RUNNING
                or not stage.heartbeat_at
                or stage.heartbeat_at >= stale
            ):
                continue
            counts["lost"] += 1
            since = f"{stage.heartbeat_at:%H:%M:%S}"
            StageLog(stage.pk, stage.attempt, Redactor())(
                f"--- {WORKER_LOST}: no heartbeat from {stage.worker} since {since} ---"
            )
            if stage.run.cancel_requested:
                _finish_stage(stage, StageStatus.CANCELLED, "cancelled by a user")
                cancel_remaining(stage.run)
                finish_run(stage.run, RunStatus.CANCELLED, "cancelled by a user")
            else:
                _finish_stage(stage, StageStatus.FAILED, WORKER_LOST)
                finish_run(stage.run, RunStatus.FAILED, f"{stage.kind}: {WORKER_LOST}")

    lost_message = now - timedelta(seconds=settings.PORTAL_QUEUED_STALE_SECONDS)
    for stage in StageRun.objects.filter(status=StageStatus.QUEUED, queued_at__lt=lost_message):
        with transaction.atomic():
            if StageRun.objects.filter(pk=stage.pk, status=StageStatus.QUEUED).update(
                queued_at=now
            ):
                counts["resent"] += 1
                send_stage_task(stage.pk)

    for stage_id in StageRun.objects.filter(
        status=StageStatus.WAITING_APPROVAL, approval_deadline__lt=now
    ).values_list("pk", flat=True):
        with transaction.atomic():
            stage = StageRun.objects.select_for_update().select_related("run").get(pk=stage_id)
            if stage.status != StageStatus.WAITING_APPROVAL:
                continue
            counts["expired"] += 1
            explanation = "approval timed out: nobody decided before the deadline"
            _finish_stage(stage, StageStatus.FAILED, explanation)
            finish_run(stage.run, RunStatus.FAILED, f"{stage.kind}: {explanation}")
    return counts


def is_finished(stage: StageRun) -> bool:
    return stage.status in FINISHED_STAGE_STATUSES


def active_run_for(account_id: int) -> PipelineRun | None:
    return PipelineRun.objects.filter(account_id=account_id, status__in=ACTIVE_RUN_STATUSES).first()
