"""Notifications: what each event says and to whom, the webhook, retries, never raising."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from accounts_app import notification_queue, notifications, tasks
from accounts_app.models import RequestStatus
from pipelines.models import OutboxMessage, PipelineRun, RunStatus, StageRun, StageStatus
from pipelines.signals import approval_needed, run_finished
from portal.celery import app as celery_app
from tests.factories import (
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

SECRET = "pw-Zq81-never-shown"


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    settings.PORTAL_WEBHOOK_URL = ""


@pytest.fixture
def people() -> dict[str, Any]:
    return {
        "sally": UserFactory(username="sally", roles=["requesters"]),
        "april": UserFactory(username="april", roles=["approvers"]),
        "adam": UserFactory(username="adam", roles=["admins"]),
        "gone": UserFactory(username="gone", roles=["approvers"], is_active=False),
        "nomail": UserFactory(username="nomail", roles=["approvers"], email=""),
    }


@pytest.fixture
def secret_account(people: dict[str, Any]) -> Any:
    return AccountFactory(
        owner=people["sally"],
        name="acme-demo",
        outputs={"db_password": {"value": SECRET, "sensitive": True, "type": "string"}},
    )


def assert_no_secret(message: notifications.Message | None) -> None:
    assert message is not None
    assert SECRET not in message.subject + message.body + message.webhook_text


def test_request_needs_approval_goes_to_active_approvers_with_a_link(
    people: dict[str, Any], secret_account: Any
) -> None:
    req = AccountRequestFactory(account=secret_account, reason="prospect call on Friday")
    message = notifications.compose(event=notifications.REQUEST_NEEDS_APPROVAL, object_id=req.pk)
    assert message is not None
    assert message.recipients == ["adam@example.com", "april@example.com"]
    assert message.subject == f"[portal] Request #{req.pk} for acme-demo needs approval"
    assert "sally asks for account acme-demo" in message.body
    assert "prospect call on Friday" in message.body
    assert message.link == f"https://portal.example.com/accounts/{secret_account.pk}/"
    assert message.webhook_text == f"{message.subject}\n{message.link}"
    assert_no_secret(message)

    # Once decided, nobody needs to be asked any more.
    req.status = RequestStatus.APPROVED
    req.save()
    assert (
        notifications.compose(event=notifications.REQUEST_NEEDS_APPROVAL, object_id=req.pk) is None
    )


def test_decisions_go_to_the_requester(people: dict[str, Any], secret_account: Any) -> None:
    req = AccountRequestFactory(account=secret_account)
    assert (
        notifications.compose(event=notifications.REQUEST_DECIDED, object_id=req.pk) is None
    )  # pending

    req.status = RequestStatus.REJECTED
    req.decided_by = people["april"]
    req.decided_at = timezone.now()
    req.comment = "use the shared demo"
    req.save()
    message = notifications.compose(event=notifications.REQUEST_DECIDED, object_id=req.pk)
    assert message is not None
    assert message.recipients == ["sally@example.com"]
    assert message.subject == f"[portal] Request #{req.pk} for acme-demo rejected"
    assert "rejected by april" in message.body and "use the shared demo" in message.body
    assert_no_secret(message)


def test_plan_waiting_goes_to_approvers_with_counts_and_the_run_link(
    people: dict[str, Any], secret_account: Any
) -> None:
    run = PipelineRunFactory(account=secret_account, status=RunStatus.WAITING_APPROVAL)
    stage = StageRunFactory(
        run=run,
        kind="approve_plan",
        status=StageStatus.WAITING_APPROVAL,
        approval_deadline=timezone.now() + timedelta(hours=72),
        outputs={"add": 2, "change": 1, "replace": 0, "destroy": 3, "workdir": "/tmp/x"},
    )
    message = notifications.compose(event=notifications.PLAN_WAITING, object_id=stage.pk)
    assert message is not None
    assert message.recipients == ["adam@example.com", "april@example.com"]
    assert "Plan: 2 to add, 1 to change, 0 to replace, 3 to destroy." in message.body
    assert message.link == f"https://portal.example.com/runs/{run.pk}/"
    assert "/tmp/x" not in message.body
    assert_no_secret(message)

    StageRun.objects.filter(pk=stage.pk).update(status=StageStatus.SUCCEEDED)
    assert notifications.compose(event=notifications.PLAN_WAITING, object_id=stage.pk) is None


def test_run_results_go_to_the_owner_and_whoever_started_it(
    people: dict[str, Any], secret_account: Any
) -> None:
    failed = PipelineRunFactory(
        account=secret_account,
        status=RunStatus.FAILED,
        created_by=people["adam"],
        explanation="apply: terraform apply failed: quota exceeded",
    )
    message = notifications.compose(event=notifications.RUN_FINISHED, object_id=failed.pk)
    assert message is not None
    assert message.recipients == ["adam@example.com", "sally@example.com"]
    assert "failed" in message.subject
    assert "Why: apply: terraform apply failed: quota exceeded" in message.body
    assert message.link == f"https://portal.example.com/runs/{failed.pk}/"
    assert_no_secret(message)

    ok = PipelineRunFactory(account=secret_account, status=RunStatus.SUCCEEDED)
    message = notifications.compose(event=notifications.RUN_FINISHED, object_id=ok.pk)
    assert message is not None and "succeeded" in message.subject
    assert message.recipients == ["sally@example.com"]
    assert message.link == f"https://portal.example.com/accounts/{secret_account.pk}/"
    assert_no_secret(message)

    cancelled = PipelineRunFactory(account=secret_account, status=RunStatus.CANCELLED)
    assert notifications.compose(event=notifications.RUN_FINISHED, object_id=cancelled.pk) is None
    assert notifications.compose(event=notifications.RUN_FINISHED, object_id=999_999) is None
    with pytest.raises(ValueError, match="unknown notification event"):
        notifications.compose(event="party", object_id=1)


# --- the webhook, against a real HTTP server ------------------------------------------------


class Hook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.received.append(
                    {
                        "content_type": self.headers["Content-Type"],
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def eager_celery() -> Iterator[None]:
    from portal.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


def test_webhook_posts_slack_compatible_json(hook: Hook) -> None:
    notifications.deliver_webhook(text="hello *team*", webhook_url=hook.url)
    assert hook.received == [{"content_type": "application/json", "body": {"text": "hello *team*"}}]


def test_webhook_failures_raise_so_the_task_retries(hook: Hook) -> None:
    hook.status = 500
    with pytest.raises(OSError):
        notifications.deliver_webhook(text="hello", webhook_url=hook.url)
    with pytest.raises(ValueError, match="http"):
        notifications.deliver_webhook(text="hello", webhook_url="file:///etc/passwd")


def test_the_notify_task_sends_mail_and_webhook(
    settings: Any,
    hook: Hook,
    eager_celery: None,
    mailoutbox: list[Any],
    people: dict[str, Any],
    secret_account: Any,
) -> None:
    settings.PORTAL_WEBHOOK_URL = hook.url
    run = PipelineRunFactory(account=secret_account, status=RunStatus.FAILED, explanation="boom")
    tasks.notify.delay(notifications.RUN_FINISHED, run.pk)
    [mail] = mailoutbox
    assert mail.to == ["sally@example.com"] and "boom" in mail.body
    [posted] = hook.received
    assert posted["body"]["text"].startswith(f"[portal] Run #{run.pk} (provision) of acme-demo")
    assert f"/runs/{run.pk}/" in posted["body"]["text"]


def test_tasks_retry_with_backoff() -> None:
    for task in (tasks.notify, tasks.send_email, tasks.post_webhook):
        assert task.autoretry_for == (Exception,)
        assert task.max_retries == 5
        assert task.retry_backoff


def _capture_sends(monkeypatch: Any, sent: list[tuple[str, int]]) -> None:
    """The broker's side of the outbox: what the portal's Celery app was asked to send."""

    def send_task(name: str, args: list[Any], **options: Any) -> None:
        assert name == tasks.notify.name
        sent.append((args[0], args[1]))

    monkeypatch.setattr(celery_app, "send_task", send_task)


def test_queueing_keeps_the_message_and_sends_it_after_the_commit(
    secret_account: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    sent: list[tuple[str, int]] = []
    _capture_sends(monkeypatch, sent)
    req = AccountRequestFactory(account=secret_account)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notification_queue.request_needs_approval(req)
    [message] = OutboxMessage.objects.filter(task=tasks.notify.name)
    assert message.args == [notifications.REQUEST_NEEDS_APPROVAL, req.pk]
    assert sent == [] and len(callbacks) == 1
    callbacks[0]()
    assert sent == [(notifications.REQUEST_NEEDS_APPROVAL, req.pk)]
    message.refresh_from_db()
    assert message.sent_at is not None


def test_engine_signals_queue_notifications_and_never_raise(
    secret_account: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    sent: list[tuple[str, int]] = []
    _capture_sends(monkeypatch, sent)
    run = PipelineRunFactory(account=secret_account)
    stage = StageRunFactory(run=run, status=StageStatus.WAITING_APPROVAL)
    with django_capture_on_commit_callbacks(execute=True):
        run_finished.send(sender=PipelineRun, run=run)
        approval_needed.send(sender=StageRun, stage=stage)
    assert sent == [
        (notifications.RUN_FINISHED, run.pk),
        (notifications.PLAN_WAITING, stage.pk),
    ]

    def broker_down(name: str, args: list[Any], **options: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        run_finished.send(sender=PipelineRun, run=run)  # logged, not raised
        approval_needed.send(sender=StageRun, stage=None)  # a broken call is logged too
    # Not lost: the message stays in the outbox for the relay to send when the broker is back.
    unsent = OutboxMessage.objects.filter(task=tasks.notify.name, sent_at__isnull=True)
    assert list(unsent.values_list("args", flat=True)) == [[notifications.RUN_FINISHED, run.pk]]
