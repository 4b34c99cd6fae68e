"""Editing an account in a real browser: the pre-filled form, the diff before anything
runs, the update waiting for an approver, then applied (real Celery worker, Terraform)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accounts_app.models import Purpose
from pipelines import services as run_services
from pipelines.models import PipelineRun, RunKind, RunStatus
from tests.browser.test_portal_browser import RUN_TIMEOUT_S, log_in
from tests.factories import AccountFactory, UserFactory
from tests.integration.update_blueprints import unique, write_blueprint

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


def test_the_owner_edits_sees_the_diff_starts_the_update_and_an_approver_lets_it_apply(
    new_page: Any,
    celery_worker: Any,
    screenshots: Path,
    wait_for_run: Any,
    blueprints_root: Path,
) -> None:
    owner = UserFactory(username="quinn-qa", roles=["requesters"])
    UserFactory(username="aria-approver", roles=["approvers"])
    name = unique("edit")
    write_blueprint(blueprints_root, name=name)
    account = AccountFactory(
        name=unique("qa"), blueprint=name, owner=owner, purpose=Purpose.QA,
        config={"label": "one", "size": "small"},
    )  # fmt: skip
    first = wait_for_run(run_services.start_run(account, RunKind.PROVISION).pk)
    assert first.status == RunStatus.SUCCEEDED, first.explanation

    page = new_page()
    log_in(page, "quinn-qa")
    page.goto(f"/accounts/{account.pk}/")
    page.click("#edit-config")
    page.wait_for_url(f"**/accounts/{account.pk}/edit/")
    assert page.input_value("#id_c-label") == "one"  # pre-filled with the account's config
    assert page.locator("button:has-text('Start update')").count() == 0
    page.fill("#id_c-label", "two")
    page.select_option("#id_c-size", "large")
    page.click("button:has-text('Review changes')")

    diff = page.locator("#diff")
    assert "main.tf" in diff.locator("h3").inner_text()
    removed = diff.locator(".diff-del").all_inner_texts()
    added = diff.locator(".diff-add").all_inner_texts()
    assert '-    label = "one"' in removed and '-    size  = "small"' in removed
    assert '+    label = "two"' in added and '+    size  = "large"' in added
    assert page.input_value("#id_c-label") == "two"  # the form keeps what was entered
    page.screenshot(path=str(screenshots / "edit-diff.png"), full_page=True)
    assert not PipelineRun.objects.filter(account=account, kind="update").exists()

    page.click("button:has-text('Start update')")
    page.wait_for_url("**/runs/*/")
    update = PipelineRun.objects.get(account=account, kind="update")
    assert "an approver decides this update" in page.inner_text("#run-approval-reason")
    page.locator("#run-status", has_text="Waiting for approval").wait_for(
        timeout=RUN_TIMEOUT_S * 1000
    )

    approver = new_page()
    log_in(approver, "aria-approver")
    approver.goto(f"/runs/{update.pk}/")
    approver.click("button:has-text('Approve plan')")
    page.locator("#run-status", has_text="Succeeded").wait_for(timeout=RUN_TIMEOUT_S * 1000)
    assert wait_for_run(update.pk).status == RunStatus.SUCCEEDED

    page.goto(f"/accounts/{account.pk}/")
    configuration = page.locator("section.card", has_text="Configuration").inner_text()
    assert "two" in configuration and "large" in configuration
    page.screenshot(path=str(screenshots / "edit-applied.png"), full_page=True)
