"""Celery tasks for notifications: thin, retried with backoff, never touching a stage."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from accounts_app import notifications, parity
from pipelines.outbox import PortalTask


class NotificationTask(PortalTask):
    """Retried on any error, 5 s, 10 s, 20 s... (with jitter), five times at most."""

    autoretry_for = (Exception,)
    retry_backoff = 5
    retry_backoff_max = 600
    retry_jitter = True
    max_retries = 5


@shared_task(base=NotificationTask)
def notify(event: str, object_id: int) -> None:
    """Compose the event's message, then hand e-mail and webhook to their own tasks."""
    message = notifications.compose(event=event, object_id=object_id)
    if message is None:
        return
    if message.recipients:
        send_email.delay(message.subject, message.body, message.recipients)
    if settings.PORTAL_WEBHOOK_URL:
        post_webhook.delay(message.webhook_text)


@shared_task(base=NotificationTask)
def send_email(subject: str, body: str, recipients: list[str]) -> None:
    notifications.deliver_email(subject=subject, body=body, recipients=recipients)


@shared_task(base=NotificationTask)
def post_webhook(text: str) -> None:
    notifications.deliver_webhook(text=text)


@shared_task(base=PortalTask)
def check_parity() -> None:
    """The schedule's parity check; an owner hears of each change out of parity once."""
    for report in parity.check_all():
        notify.delay_on_commit(notifications.PARITY_CHANGED, report.pk)
