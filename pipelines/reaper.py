"""The reaper: a periodic sweep so that no stage stays "running" after its worker died.

Every ``PORTAL_REAPER_SECONDS`` (beat) it
- fails a running stage whose heartbeat is older than ``PORTAL_HEARTBEAT_STALE_SECONDS``,
  once its process is known to be gone: a worker on this host is checked by pid, so a
  retry never overlaps a slow attempt that still runs here; on another host a stale
  heartbeat is the only sign there is;
- sends again the task of a stage queued longer than ``PORTAL_QUEUED_STALE_SECONDS``
  (its message was lost; a duplicate finds the stage no longer queued);
- fails a stage waiting for approval past its deadline;
- forgets outbox messages sent more than a day ago.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pipelines import engine, outbox
from pipelines.logs import StageLog
from pipelines.models import StageRun, StageStatus
from pipelines.redaction import Redactor

APPROVAL_TIMED_OUT = "approval timed out: nobody decided before the deadline"
OUTBOX_KEPT = timedelta(days=1)


@dataclass
class Reaped:
    lost: int = 0
    resent: int = 0
    expired: int = 0
    pruned: int = 0


def reap(now: datetime | None = None) -> dict[str, int]:
    """One sweep; how many stages were failed as lost, re-sent, expired, and messages pruned."""
    now = now or timezone.now()
    counts = Reaped(
        lost=fail_lost_stages(now=now),
        resent=resend_queued(
            older_than=now - timedelta(seconds=settings.PORTAL_QUEUED_STALE_SECONDS)
        ),
        expired=expire_approvals(now=now),
        pruned=outbox.prune(sent_before=now - OUTBOX_KEPT),
    )
    return asdict(counts)


def fail_lost_stages(*, now: datetime) -> int:
    stale = now - timedelta(seconds=settings.PORTAL_HEARTBEAT_STALE_SECONDS)
    lost = 0
    candidates = StageRun.objects.filter(status=StageStatus.RUNNING, heartbeat_at__lt=stale)
    for stage_id in candidates.values_list("pk", flat=True):
        with transaction.atomic():
            stage = engine.lock_stage(stage_id)
            if (
                stage is None
                or stage.status != StageStatus.RUNNING
                or not stage.heartbeat_at
                or stage.heartbeat_at >= stale
                # Late beats from a process that still runs here: a retry would overlap it.
                or engine.worker_gone(stage) is False
            ):
                continue
            lost += 1
            since = f"{stage.heartbeat_at:%H:%M:%S}"
            StageLog(stage.pk, stage.attempt, Redactor())(
                f"--- {engine.WORKER_LOST}: no heartbeat from {stage.worker} since {since} ---"
            )
            engine.fail_stage(stage, explanation=engine.WORKER_LOST)
    return lost


def resend_queued(older_than: datetime | None = None) -> int:
    """Send again the tasks of stages queued before ``older_than`` (default: all queued)."""
    queued = StageRun.objects.filter(status=StageStatus.QUEUED)
    if older_than is not None:
        queued = queued.filter(queued_at__lt=older_than)
    resent = 0
    for stage_id in queued.values_list("pk", flat=True):
        with transaction.atomic():
            if StageRun.objects.filter(pk=stage_id, status=StageStatus.QUEUED).update(
                queued_at=timezone.now()
            ):
                resent += 1
                engine.send_stage_task(stage_id)
    return resent


def expire_approvals(*, now: datetime) -> int:
    expired = 0
    waiting = StageRun.objects.filter(
        status=StageStatus.WAITING_APPROVAL, approval_deadline__lt=now
    )
    for stage_id in waiting.values_list("pk", flat=True):
        with transaction.atomic():
            stage = engine.lock_stage(stage_id)
            if stage is None or stage.status != StageStatus.WAITING_APPROVAL:
                continue
            expired += 1
            engine.fail_stage(stage, explanation=APPROVAL_TIMED_OUT)
    return expired
