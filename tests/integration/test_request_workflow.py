"""The request workflow: request, policy checks, auto-approval, approve, reject."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts_app import services
from accounts_app.models import Account, AccountRequest, AccountStatus, RequestStatus
from pipelines.models import PipelineRun, RunStatus, StageRun, StageStatus
from pipelines.services import RunConflict
from tests.factories import SANDBOX_CONFIG, AccountFactory, PipelineRunFactory, UserFactory

pytestmark = pytest.mark.django_db  # the database only: no worker, Terraform or moto


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run notification tasks in-process, so their e-mails land in the test outbox."""
    from portal.celery import app

    old = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = old


@pytest.fixture
def requester() -> Any:
    return UserFactory(username="sally", roles=["requesters"])


@pytest.fixture
def approver() -> Any:
    return UserFactory(username="april", roles=["approvers"])


@pytest.fixture
def admin() -> Any:
    return UserFactory(username="adam", roles=["admins"])


def ask(user: Any, name: str = "acme-demo", **overrides: Any) -> tuple[Account, AccountRequest]:
    values: dict[str, Any] = {
        "user": user,
        "name": name,
        "blueprint": "sandbox",
        "purpose": "demo",
        "config": dict(SANDBOX_CONFIG),
        "reason": "demo for ACME",
    }
    values.update(overrides)
    return services.request_account(**values)


def test_a_requester_request_waits_for_approval_and_approvers_are_told(
    requester: Any,
    approver: Any,
    admin: Any,
    eager_celery: None,
    mailoutbox: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        account, req = ask(requester)

    assert req.status == RequestStatus.PENDING
    assert account.status == AccountStatus.REQUESTED
    assert account.owner == requester and req.requested_by == requester
    assert req.reason == "demo for ACME"
    # demo: default_ttl_days 14
    assert account.expires_at is not None
    assert before + timedelta(days=14) <= account.expires_at <= timezone.now() + timedelta(days=14)
    assert req.expires_at == account.expires_at
    assert not PipelineRun.objects.filter(account=account).exists()
    # The stored config has the blueprint's defaults filled in.
    assert account.config["instance_size"] == "small"

    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert "needs approval" in mail.subject and "acme-demo" in mail.subject
    assert sorted(mail.to) == ["adam@example.com", "april@example.com"]
    assert f"/accounts/{account.pk}/" in mail.body


def test_every_problem_is_reported_at_once_and_nothing_is_written(requester: Any) -> None:
    with pytest.raises(services.RequestInvalid) as caught:
        ask(
            requester,
            name="Bad Name!",
            purpose="holiday",
            expires_at=timezone.now() - timedelta(days=1),
            config={**SANDBOX_CONFIG, "cidr": "10.0.0.0/99", "services": [{"name": "X"}]},
        )
    errors = caught.value.errors
    assert set(errors) == {"name", "purpose", "expires_at", "config"}, errors
    assert any("$.cidr" in message for message in errors["config"])
    assert any("$.services[0].name" in message for message in errors["config"])
    assert "$.cidr" in caught.value.errors_by_path
    assert "$.services[0].name" in caught.value.errors_by_path
    assert not Account.objects.exists() and not AccountRequest.objects.exists()


def test_unknown_blueprint_and_past_expiry(requester: Any) -> None:
    with pytest.raises(services.RequestInvalid) as caught:
        ask(requester, blueprint="nope")
    assert list(caught.value.errors) == ["blueprint"]

    with pytest.raises(services.RequestInvalid) as caught:
        ask(requester, expires_at=timezone.now() - timedelta(minutes=1))
    assert caught.value.errors == {"expires_at": ["must be in the future"]}


def test_expiry_is_within_the_policy_maximum(requester: Any) -> None:
    with pytest.raises(services.RequestInvalid) as caught:
        ask(requester, purpose="loadtest", expires_at=timezone.now() + timedelta(days=8))
    assert "at most 7 days" in caught.value.errors["expires_at"][0]

    chosen = timezone.now() + timedelta(days=6)
    account, req = ask(requester, purpose="loadtest", expires_at=chosen)
    assert account.expires_at == chosen == req.expires_at


def test_duplicate_names_are_refused_clearly(requester: Any) -> None:
    AccountFactory(name="acme-demo")
    with pytest.raises(services.RequestInvalid) as caught:
        ask(requester)
    assert caught.value.errors == {
        "name": ["an account named 'acme-demo' already exists; choose another name"]
    }


def test_quota_counts_active_accounts_only(requester: Any) -> None:
    # loadtest: max_active_per_user 2
    AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.READY)
    AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.REQUESTED)
    AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.TORN_DOWN)
    AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.REJECTED)
    AccountFactory(purpose="loadtest", status=AccountStatus.READY)  # someone else's
    AccountFactory(owner=requester, purpose="qa", status=AccountStatus.READY)  # other purpose

    with pytest.raises(services.RequestInvalid) as caught:
        ask(requester, purpose="loadtest")
    message = caught.value.errors["purpose"][0]
    assert "2 in use, limit 2" in message, message

    Account.objects.filter(owner=requester, status=AccountStatus.READY).update(
        status=AccountStatus.TORN_DOWN
    )
    account, _ = ask(requester, purpose="loadtest")
    assert account.status == AccountStatus.REQUESTED


@pytest.fixture
def demo_only_blueprint(blueprints_root: Path) -> Iterator[str]:
    """A blueprint whose policy lists only `demo`."""
    folder = blueprints_root / "demo-only"
    shutil.copytree(blueprints_root / "render-only", folder)
    spec = yaml.safe_load((folder / "blueprint.yaml").read_text())
    spec["name"] = "demo-only"
    spec["policy"] = {"demo": {"default_ttl_days": 2, "max_ttl_days": 3}}
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))
    yield "demo-only"
    shutil.rmtree(folder)


def test_a_purpose_missing_from_the_policy_is_refused(
    requester: Any, demo_only_blueprint: str
) -> None:
    with pytest.raises(services.RequestInvalid) as caught:
        ask(requester, blueprint=demo_only_blueprint, purpose="qa", config={})
    assert caught.value.errors["purpose"] == [
        "blueprint demo-only does not allow qa (allowed: demo)"
    ]
    account, _ = ask(requester, blueprint=demo_only_blueprint, purpose="demo", config={})
    assert account.config == {"label": "hello"}


def test_a_blueprint_without_policy_allows_any_purpose_and_no_expiry(requester: Any) -> None:
    account, req = ask(requester, blueprint="render-only", purpose="standby", config={})
    assert account.expires_at is None and req.status == RequestStatus.PENDING


def test_auto_approved_requests_start_their_provision_run(
    approver: Any,
    admin: Any,
    mailoutbox: list[Any],
    eager_celery: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # qa auto-approves approvers; the run starts at once, nobody is asked.
    with django_capture_on_commit_callbacks(execute=False):
        account, req = ask(approver, name="qa-one", purpose="qa")
    assert req.status == RequestStatus.AUTO_APPROVED
    assert req.decided_at is not None and "approvers" in req.comment
    run = PipelineRun.objects.get(account=account)
    assert run.kind == "provision" and run.status == RunStatus.RUNNING
    assert run.created_by == approver
    assert account.status == AccountStatus.PROVISIONING
    first = StageRun.objects.get(run=run, position=1)
    assert first.status == StageStatus.QUEUED
    assert mailoutbox == []

    # demo auto-approves admins only: the approver's demo request waits.
    _, demo_req = ask(approver, name="demo-one", purpose="demo")
    assert demo_req.status == RequestStatus.PENDING
    # An admin's demo request does not.
    _, admin_req = ask(admin, name="demo-two", purpose="demo")
    assert admin_req.status == RequestStatus.AUTO_APPROVED


def test_approve_starts_the_run_and_tells_the_requester(
    requester: Any,
    approver: Any,
    eager_celery: None,
    mailoutbox: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    from accounts_app.tasks import notify

    account, req = ask(requester)
    mailoutbox.clear()
    # Not executed: they would run the whole pipeline in-process.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        decided, run = services.approve_request(
            account_request=req, user=approver, comment="go ahead"
        )
    assert len(callbacks) == 2, "the first stage and the notification go after commit"
    decided.refresh_from_db()
    assert decided.status == RequestStatus.APPROVED
    assert decided.decided_by == approver and decided.comment == "go ahead"
    assert decided.decided_at is not None
    assert run.account_id == account.pk and run.kind == "provision"
    assert run.stages.get(position=1).status == StageStatus.QUEUED
    account.refresh_from_db()
    assert account.status == AccountStatus.PROVISIONING

    notify.delay("request_decided", req.pk)
    [mail] = mailoutbox
    assert "approved" in mail.subject and mail.to == ["sally@example.com"]
    assert "april" in mail.body and "go ahead" in mail.body

    with pytest.raises(services.RequestRefused, match="already approved"):
        services.approve_request(account_request=req, user=approver)
    with pytest.raises(services.RequestRefused, match="already approved"):
        services.reject_request(account_request=req, user=approver, comment="too late")


def test_reject_needs_a_comment_and_rejects_the_account(
    requester: Any,
    approver: Any,
    eager_celery: None,
    mailoutbox: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    account, req = ask(requester)
    with pytest.raises(services.RequestInvalid) as caught:
        services.reject_request(account_request=req, user=approver, comment="  ")
    assert list(caught.value.errors) == ["comment"]
    req.refresh_from_db()
    assert req.status == RequestStatus.PENDING

    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.reject_request(account_request=req, user=approver, comment="use the shared demo")
    req.refresh_from_db()
    account.refresh_from_db()
    assert req.status == RequestStatus.REJECTED and req.decided_by == approver
    assert req.comment == "use the shared demo"
    assert account.status == AccountStatus.REJECTED
    assert not PipelineRun.objects.filter(account=account).exists()
    [mail] = mailoutbox
    assert "rejected" in mail.subject and mail.to == ["sally@example.com"]
    assert "use the shared demo" in mail.body

    # A rejected account no longer counts against the quota, and cannot be run.
    with pytest.raises(services.RequestRefused, match="rejected"):
        services.start_account_run(account=account, kind="provision", user=requester)


def test_runs_start_only_on_approved_accounts_one_at_a_time(requester: Any, approver: Any) -> None:
    account, req = ask(requester)
    with pytest.raises(services.RequestRefused, match="waits for its request"):
        services.start_account_run(account=account, kind="provision", user=requester)
    with pytest.raises(services.RequestRefused, match="cannot be started here"):
        services.start_account_run(account=account, kind="nuke", user=requester)
    with pytest.raises(services.RequestRefused, match="waits for its request"):
        services.start_account_run(account=account, kind="drift-check", user=requester)

    _, run = services.approve_request(account_request=req, user=approver)
    with pytest.raises(RunConflict) as caught:
        services.start_account_run(account=account, kind="update", user=requester)
    assert caught.value.holder_id == run.pk

    PipelineRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    update = services.start_account_run(account=account, kind="update", user=requester)
    assert update.kind == "update" and update.status == RunStatus.RUNNING


def test_a_run_finishing_notifies_the_owner_with_a_link(
    requester: Any,
    eager_celery: None,
    mailoutbox: list[Any],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from pipelines import engine

    settings.PORTAL_BASE_URL = "https://portal.example.com"
    account = AccountFactory(
        owner=requester, outputs={"db_password": {"value": "s3cr3t-pw", "sensitive": True}}
    )
    failed = PipelineRunFactory(account=account, status=RunStatus.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        engine.finish_run(
            failed, status=RunStatus.FAILED, explanation="plan: terraform plan failed: bad CIDR"
        )
    [mail] = mailoutbox
    assert mail.to == ["sally@example.com"] and "failed" in mail.subject
    assert "terraform plan failed: bad CIDR" in mail.body
    assert f"https://portal.example.com/runs/{failed.pk}/" in mail.body

    mailoutbox.clear()
    ok = PipelineRunFactory(account=account, status=RunStatus.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        engine.finish_run(ok, status=RunStatus.SUCCEEDED, explanation="")
    [mail] = mailoutbox
    assert "succeeded" in mail.subject
    assert f"https://portal.example.com/accounts/{account.pk}/" in mail.body
    assert "s3cr3t-pw" not in mail.body and "s3cr3t-pw" not in mail.subject


def test_the_admin_action_goes_through_the_request_checks(requester: Any, approver: Any) -> None:
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    account, req = ask(requester)
    services.reject_request(account_request=req, user=approver, comment="no budget")
    client = Client()
    client.force_login(staff)

    answer = client.post(
        reverse("admin:accounts_app_account_changelist"),
        {"action": "provision", "_selected_action": [account.pk]},
        follow=True,
    )

    assert answer.status_code == 200
    shown = [str(m) for m in answer.context["messages"]]
    assert shown == [f"{account.name}: account {account.name} was rejected"], shown
    assert not PipelineRun.objects.filter(account=account).exists()
    account.refresh_from_db()
    assert account.status == AccountStatus.REJECTED


def test_the_admin_action_starts_a_run_on_an_approved_account(requester: Any) -> None:
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    account = AccountFactory(owner=requester, status=AccountStatus.READY)
    client = Client()
    client.force_login(staff)

    answer = client.post(
        reverse("admin:accounts_app_account_changelist"),
        {"action": "update", "_selected_action": [account.pk]},
        follow=True,
    )

    run = PipelineRun.objects.get(account=account)
    assert run.kind == "update" and run.created_by == staff
    assert [str(m) for m in answer.context["messages"]] == [
        f"{account.name}: started run #{run.pk}"
    ]


def test_an_approver_cannot_approve_their_own_request(approver: Any, settings: Any) -> None:
    _, req = ask(approver)
    with pytest.raises(services.RequestRefused, match="your own"):
        services.approve_request(account_request=req, user=approver)
    req.refresh_from_db()
    assert req.status == RequestStatus.PENDING

    settings.PORTAL_ALLOW_SELF_APPROVAL = True
    decided, _ = services.approve_request(account_request=req, user=approver)
    assert decided.decided_by == approver


def test_provisioning_a_torn_down_account_again_counts_against_the_quota(
    requester: Any,
) -> None:
    # loadtest: max_active_per_user 2; a failed account counts, a torn-down one does not.
    AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.READY)
    failed = AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.FAILED)
    gone = AccountFactory(owner=requester, purpose="loadtest", status=AccountStatus.TORN_DOWN)

    with pytest.raises(services.RequestRefused, match="2 in use, limit 2") as caught:
        services.start_account_run(account=gone, kind="provision", user=requester)
    assert caught.value.field == "purpose"
    # Provisioning the failed one again takes no more room than it holds already.
    run = services.start_account_run(account=failed, kind="provision", user=requester)
    assert run.kind == "provision"
