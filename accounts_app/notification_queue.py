"""Queueing notifications: called by the workflow services and the engine's signals.

A notification is only *queued* here: the ``notify`` task, carrying the event and an
id, goes into the outbox in the caller's transaction and is sent after the commit
(``pipelines.outbox``), so a broker that is down delays it but never loses it;
``accounts_app.notifications`` composes and delivers it in the task. Queueing never
raises: a broken mail server or broker must never block a request or a stage.
"""

from __future__ import annotations

import logging

from accounts_app.models import AccountRequest
from accounts_app.notifications import (
    EVENTS,
    PLAN_WAITING,
    REQUEST_DECIDED,
    REQUEST_NEEDS_APPROVAL,
    RUN_FINISHED,
)
from accounts_app.tasks import notify
from pipelines.models import PipelineRun, StageRun

logger = logging.getLogger(__name__)


def queue(*, event: str, object_id: int) -> None:
    """Send the notification task once the current transaction commits (via the outbox)."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}")
    notify.delay_on_commit(event, object_id)


def request_needs_approval(req: AccountRequest) -> None:
    queue(event=REQUEST_NEEDS_APPROVAL, object_id=req.pk)


def request_decided(req: AccountRequest) -> None:
    queue(event=REQUEST_DECIDED, object_id=req.pk)


def on_approval_needed(
    sender: type[StageRun], stage: StageRun | None = None, **kwargs: object
) -> None:
    """Receiver of pipelines.signals.approval_needed."""
    if stage is None:
        logger.error("approval_needed sent without a stage")
        return
    try:
        queue(event=PLAN_WAITING, object_id=stage.pk)
    except Exception:
        logger.exception("approval_needed notification failed")


def on_run_finished(
    sender: type[PipelineRun], run: PipelineRun | None = None, **kwargs: object
) -> None:
    """Receiver of pipelines.signals.run_finished."""
    if run is None:
        logger.error("run_finished sent without a run")
        return
    try:
        queue(event=RUN_FINISHED, object_id=run.pk)
    except Exception:
        logger.exception("run_finished notification failed")
