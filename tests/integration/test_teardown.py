"""Teardown runs, and accounts torn down when they expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts_app.models import AccountStatus
from pipelines import services
from pipelines.models import RunStatus, StageStatus, Trigger
from tests.factories import AccountFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_expired_account_is_torn_down_without_asking(celery_worker, wait_for_run) -> None:
    # The shipped sandbox's Terraform without its database (no production data here).
    account = AccountFactory(blueprint="sandbox-infra", purpose="demo")
    provision = wait_for_run(services.start_run(account, "provision").pk, timeout=240)
    assert provision.status == RunStatus.SUCCEEDED, provision.explanation

    account.refresh_from_db()
    account.expires_at = timezone.now() - timedelta(minutes=1)
    account.save()
    protected = AccountFactory(
        blueprint="sandbox", protected=True, status=AccountStatus.READY,
        expires_at=timezone.now() - timedelta(days=1),
    )  # fmt: skip

    started = services.expire_accounts()

    assert [run.account_id for run in started] == [account.pk]  # never the protected one
    teardown = wait_for_run(started[0].pk, timeout=240)
    assert (teardown.kind, teardown.trigger, teardown.status) == (
        "teardown", Trigger.SCHEDULE, RunStatus.SUCCEEDED,
    )  # fmt: skip
    plan = teardown.stages.get(kind="plan")
    assert plan.outputs["destroy_plan"] is True
    assert plan.outputs["destroy"] > 0 and plan.outputs["add"] == 0
    approval = teardown.stages.get(kind="approve_plan")
    assert approval.outputs["approval_required"] is False
    account.refresh_from_db()
    assert account.status == AccountStatus.TORN_DOWN
    protected.refresh_from_db()
    assert protected.status == AccountStatus.READY
    assert services.expire_accounts() == []  # a torn-down account is not swept again


def test_teardown_asked_by_a_user_waits_for_approval(celery_worker, wait_for_run) -> None:
    account = AccountFactory(blueprint="sandbox-infra")
    assert wait_for_run(services.start_run(account, "provision").pk, timeout=240).status == (
        RunStatus.SUCCEEDED
    )

    run = services.start_run(account, "teardown")
    account.refresh_from_db()
    assert account.status == AccountStatus.TEARING_DOWN
    waiting = wait_for_run(run.pk, statuses=(RunStatus.WAITING_APPROVAL,), timeout=240)

    stage = waiting.stages.get(kind="approve_plan")
    assert stage.status == StageStatus.WAITING_APPROVAL
    assert "destroys or replaces" in stage.outputs["reason"]
