"""In a real browser: a teardown needs the account's name typed; a cancel asks first."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts_app.models import AccountStatus
from pipelines.models import PipelineRun, RunStatus, StageStatus
from tests.browser.test_portal_browser import log_in
from tests.factories import AccountFactory, PipelineRunFactory, StageRunFactory, UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


def test_an_owner_tears_down_a_failed_account_by_typing_its_name(
    new_page: Any, celery_worker: Any, screenshots: Path, wait_for_run: Any
) -> None:
    owner = UserFactory(username="sam-sales", roles=["requesters"])
    account = AccountFactory(name="acme-broken", owner=owner, status=AccountStatus.FAILED)

    page = new_page()
    log_in(page, "sam-sales")
    page.goto(f"/accounts/{account.pk}/")
    page.click("summary:has-text('Tear down this account')")
    page.fill("#confirm-teardown", "acme-broke")
    page.fill("#teardown-reason", "the demo is over")
    page.click("button:has-text('Tear down')")
    # The browser itself refuses a name that is not the account's: nothing is sent.
    assert page.eval_on_selector("#confirm-teardown", "e => e.validity.patternMismatch")
    assert not PipelineRun.objects.filter(account=account).exists()

    page.fill("#confirm-teardown", "acme-broken")
    page.click("button:has-text('Tear down')")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    run = PipelineRun.objects.get(account=account)
    assert run.kind == "teardown"
    assert wait_for_run(run.pk, timeout=120).status == RunStatus.SUCCEEDED

    page.goto(f"/accounts/{account.pk}/")
    torn_down = page.inner_text("#torn-down")
    assert "sam-sales" in torn_down and "the demo is over" in torn_down
    assert "Expires" not in page.inner_text("dl.kv")
    page.screenshot(path=str(screenshots / "teardown-typed-name.png"), full_page=True)


def test_cancel_asks_first_and_the_cancelled_run_says_so(new_page: Any) -> None:
    owner = UserFactory(username="sam-sales", roles=["requesters"])
    account = AccountFactory(name="acme-busy", owner=owner, status=AccountStatus.PROVISIONING)
    run = PipelineRunFactory(account=account, status=RunStatus.WAITING_APPROVAL, created_by=owner)
    # Waiting for a decision: no worker touches it meanwhile.
    StageRunFactory(
        run=run,
        position=1,
        kind="approve_plan",
        status=StageStatus.WAITING_APPROVAL,
        approval_deadline=timezone.now() + timedelta(hours=1),
    )
    StageRunFactory(run=run, position=2, kind="apply", status=StageStatus.PENDING, attempt=0)

    page = new_page()
    log_in(page, "sam-sales")
    page.goto(f"/runs/{run.pk}/")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("button:has-text('Cancel run')")
    page.wait_for_timeout(1000)  # time enough for a post that should not happen
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING_APPROVAL  # the answer was no: nothing was sent

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector("#run-explanation")
    assert page.inner_text("#run-explanation").startswith("Cancelled:")
    assert page.inner_text("#run-status") == "Cancelled"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert [s.status for s in run.stages.all()] == [StageStatus.CANCELLED, StageStatus.SKIPPED]
