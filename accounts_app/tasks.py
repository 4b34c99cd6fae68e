"""Celery tasks for notifications: thin, retried with backoff, never touching a stage."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from accounts_app import notifications, parity

# Retried on any error, 5 s, 10 s, 20 s... (with jitter), five times at most.
RETRY_FOR = (Exception,)
BACKOFF_SECONDS = 5
BACKOFF_MAX_SECONDS = 600
MAX_RETRIES = 5


@shared_task(
    autoretry_for=RETRY_FOR,
    retry_backoff=BACKOFF_SECONDS,
    retry_backoff_max=BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def notify(event: str, object_id: int) -> None:
    """Compose the event's message, then hand e-mail and webhook to their own tasks."""
    message = notifications.compose(event=event, object_id=object_id)
    if message is None:
        return
    if message.recipients:
        send_email.delay(message.subject, message.body, message.recipients)
    if settings.PORTAL_WEBHOOK_URL:
        post_webhook.delay(message.webhook_text)


@shared_task(
    autoretry_for=RETRY_FOR,
    retry_backoff=BACKOFF_SECONDS,
    retry_backoff_max=BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def send_email(subject: str, body: str, recipients: list[str]) -> None:
    notifications.deliver_email(subject=subject, body=body, recipients=recipients)


@shared_task(
    autoretry_for=RETRY_FOR,
    retry_backoff=BACKOFF_SECONDS,
    retry_backoff_max=BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
    ignore_result=True,
)
def post_webhook(text: str) -> None:
    notifications.deliver_webhook(text=text)


@shared_task(ignore_result=True)
def check_parity() -> None:
    """The schedule's parity check; an owner hears of each change out of parity once."""
    for report in parity.check_all():
        notify.delay(notifications.PARITY_CHANGED, report.pk)
