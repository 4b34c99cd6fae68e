"""Scheduled tasks of the workflow: expiry reminders and drift checks.

Their own module (listed in ``CELERY_IMPORTS``): the workflow services queue
notifications through ``accounts_app.tasks``, so these tasks, which call the
services, cannot live there without an import cycle.
"""

from __future__ import annotations

from celery import shared_task

from accounts_app import drift, expiry
from pipelines.outbox import PortalTask


@shared_task(base=PortalTask)
def remind_expiry() -> list[int]:
    """The schedule's expiry reminders; each is sent once (accounts_app.expiry)."""
    return [reminder.pk for reminder in expiry.send_reminders()]


@shared_task(base=PortalTask)
def check_drift() -> list[int]:
    """Starts the drift checks that are due; what they find is recorded as they finish."""
    return [run.pk for run in drift.check_due()]
