"""The three kinds of users doing their jobs in a real browser, with a real Celery worker.

Sales requests a sandbox demo through the generated form (and fixes a bad CIDR), an
admin approves it, the worker builds it with real Terraform while sales watches the
log follow live, and sales sees the outputs (the sensitive one hidden). A stage that
fails shows its explanation at the top and a Retry button that brings the run home.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts_app import services as account_services
from accounts_app.models import Account
from pipelines.models import PipelineRun, RunStatus
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

PASSWORD = "pw-for-tests-1"


RUN_TIMEOUT_S = 90


def log_in(page: Any, username: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r".*/$"))


def test_sales_requests_a_sandbox_demo_admin_approves_and_sales_watches_it_build(
    new_page: Any, celery_worker: Any, screenshots: Path, wait_for_run: Any
) -> None:
    UserFactory(username="sam-sales", roles=["requesters"])
    UserFactory(username="ada-admin", roles=["admins"])

    # --- sales fills in the generated form ------------------------------------------------
    sales = new_page()
    log_in(sales, "sam-sales")
    sales.click("text=Request an account")
    # The shipped sandbox's form and Terraform, without its database (no production data here).
    sales.click("a[href$='/request/sandbox-infra/']")
    sales.wait_for_url("**/request/sandbox-infra/")
    sales.fill("#id_name", "acme-demo")
    sales.select_option("#id_purpose", "loadtest")  # the expiry follows the purpose's policy
    assert (
        sales.get_attribute("#id_expires_on", "max")
        == (timezone.localdate() + timedelta(days=7)).isoformat()
    )
    sales.select_option("#id_purpose", "demo")
    assert (
        sales.input_value("#id_expires_on")
        == (timezone.localdate() + timedelta(days=14)).isoformat()
    )
    sales.fill("#id_reason", "Demo for ACME on Friday")
    sales.fill("#id_c-cidr", "10.50.0.0/99")  # a bad CIDR
    sales.fill("#id_c-dns_zone", "acme.internal")
    # One default service (web) and one blank row; add a third row without JavaScript.
    sales.click("button:has-text('Add a service')")
    assert sales.locator("#id_c-services-2-name").count() == 1
    assert sales.input_value("#id_name") == "acme-demo"  # values kept across the round trip
    sales.fill("#id_c-services-1-name", "orders")
    sales.check("#id_c-services-1-database")
    sales.click("button:has-text('Submit request')")

    error = sales.locator("#id_c-cidr-errors")
    assert "expected format" in error.inner_text()
    assert sales.input_value("#id_c-cidr") == "10.50.0.0/99"
    assert sales.is_checked("#id_c-services-1-database")
    sales.screenshot(path=str(screenshots / "request-form-error.png"), full_page=True)
    assert not Account.objects.exists()

    sales.fill("#id_c-cidr", "10.50.0.0/16")
    sales.click("button:has-text('Preview')")
    preview = sales.locator("#preview")
    assert '"10.50.0.0/16"' in preview.inner_text()
    sales.screenshot(path=str(screenshots / "request-form-preview.png"), full_page=True)
    sales.click("button:has-text('Submit request')")
    sales.wait_for_url(re.compile(r".*/accounts/\d+/$"))
    assert "waits for an approver" in sales.inner_text(".messages")
    account = Account.objects.get(name="acme-demo")
    assert account.status == "requested"
    assert [s["name"] for s in account.config["services"]] == ["web", "orders"]

    # --- the admin approves it ----------------------------------------------------------
    admin = new_page()
    log_in(admin, "ada-admin")
    admin.click("nav >> text=Approvals")
    admin.screenshot(path=str(screenshots / "approvals.png"), full_page=True)
    card = admin.locator("section.card", has_text="acme-demo")
    card.locator("input[name=comment]").fill("go for ACME")
    card.locator("button:has-text('Approve')").click()
    assert "Approved acme-demo" in admin.inner_text(".messages")
    run = PipelineRun.objects.get(account=account)

    # --- sales watches the run; its log and statuses follow live ------------------------
    sales.goto(f"/runs/{run.pk}/")
    sales.evaluate("window.__notReloaded = true")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run.refresh_from_db()
        if run.status == RunStatus.WAITING_APPROVAL:
            admin.goto("/approvals/")
            plan_card = admin.locator("section.card", has_text=f"Run #{run.pk}")
            plan_card.locator("button:has-text('Approve plan')").click()
        if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
            break
        assert time.monotonic() < deadline, f"run {run.pk} still {run.status}"
        time.sleep(0.5)
    assert run.status == RunStatus.SUCCEEDED, run.explanation

    sales.locator("#run-status", has_text="Succeeded").wait_for(timeout=15_000)
    apply_log = sales.locator("section[data-kind=apply] pre.log")
    apply_log.locator("text=--- apply succeeded ---").wait_for(timeout=15_000)
    assert sales.evaluate("window.__notReloaded === true"), "the page reloaded instead of following"
    assert sales.locator("section[data-kind=apply] .badge.succeeded").count() == 1
    assert sales.locator(".tl-bar.succeeded").count() == run.stages.count()
    sales.screenshot(path=str(screenshots / "run-page.png"), full_page=True)

    # --- sales sees the account's outputs, the sensitive one hidden ---------------------
    sales.goto(f"/accounts/{account.pk}/")
    outputs = sales.inner_text("#outputs")
    assert "vpc_cidr" in outputs and "10.50.0.0/16" in outputs
    assert re.search(r"admin_token\s+\(sensitive\)", outputs)
    hidden = hashlib.sha256(b"acme-demo:admin").hexdigest()
    assert hidden not in sales.content()
    sales.screenshot(path=str(screenshots / "account-page.png"), full_page=True)

    # --- an update that destroys resources waits for the admin to approve its plan ------
    account.refresh_from_db()
    account.config = {**account.config, "services": [{"name": "web", "database": False}]}
    account.save(update_fields=["config"])
    sales.click("button:has-text('Start update run')")
    sales.wait_for_url(re.compile(r".*/runs/\d+/$"))
    update = PipelineRun.objects.get(account=account, kind="update")
    wait_for_run(update.pk, (RunStatus.WAITING_APPROVAL,), RUN_TIMEOUT_S)
    sales.locator("#run-status", has_text="Waiting for approval").wait_for()
    admin.goto("/approvals/")
    plan_card = admin.locator("section.card", has_text=f"Run #{update.pk}")
    summary = plan_card.locator(".plan-counts").inner_text()
    assert re.search(r"[1-9]\d* to destroy", summary), summary
    admin.screenshot(path=str(screenshots / "approvals-plan.png"), full_page=True)
    plan_card.locator("input[name=comment]").fill("orders goes away on purpose")
    plan_card.locator("button:has-text('Approve plan')").click()
    assert f"Approved the plan of run #{update.pk}" in admin.inner_text(".messages")
    sales.locator("#run-status", has_text="Succeeded").wait_for(timeout=RUN_TIMEOUT_S * 1000)
    head = sales.locator("section[data-kind=approve_plan] .stage-head")
    assert "Approved by ada-admin" in head.inner_text()
    assert wait_for_run(update.pk, (RunStatus.SUCCEEDED,), 10)

    sales.goto("/")
    assert "acme-demo" in sales.inner_text("table")
    sales.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

    # --- phone width ----------------------------------------------------------------------
    phone = new_page(width=390, height=844)
    log_in(phone, "sam-sales")
    phone.screenshot(path=str(screenshots / "dashboard-390px.png"), full_page=True)
    phone.goto(f"/runs/{run.pk}/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(screenshots / "run-page-390px.png"), full_page=True)
    phone.goto("/request/sandbox/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(screenshots / "request-form-390px.png"), full_page=True)


def test_a_failed_stage_explains_itself_and_retry_brings_the_run_to_success(
    new_page: Any, celery_worker: Any, screenshots: Path, wait_for_run: Any
) -> None:
    admin_user = UserFactory(username="ada-admin", roles=["admins"])
    # Admins' qa requests of this blueprint are auto-approved: the run starts at once.
    account, _ = account_services.request_account(
        user=admin_user, name="flaky-one", blueprint="flaky-hook", purpose="qa", config={}
    )
    run = PipelineRun.objects.get(account=account)

    admin = new_page()
    log_in(admin, "ada-admin")
    admin.goto(f"/runs/{run.pk}/")
    explanation = admin.locator("#run-explanation")
    explanation.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    assert "the transit gateway is not attached yet" in explanation.inner_text()
    head = admin.locator("section[data-kind=pre_hooks] .stage-head")
    assert "exited with status 3" in head.inner_text()
    admin.screenshot(path=str(screenshots / "run-page-failed.png"), full_page=True)

    head.locator("button:has-text('Retry pre_hooks')").click()
    admin.wait_for_url(f"**/runs/{run.pk}/")
    admin.locator("#run-status", has_text="Succeeded").wait_for(timeout=RUN_TIMEOUT_S * 1000)
    assert admin.locator("#run-explanation").count() == 0
    assert "attempt 2" in head.inner_text()
    # The log follows by polling, so its last lines may land after the status does; and
    # if the retry finished before the redirect's page was drawn, the stage's log sits in
    # a closed <details>, where innerText is empty: wait for the text, not for visibility.
    pre_hooks_log = admin.locator("section[data-kind=pre_hooks] pre.log")
    pre_hooks_log.locator("text=network ready").wait_for(state="attached", timeout=15_000)
    log = pre_hooks_log.text_content() or ""
    assert "retry requested by ada-admin" in log and "network ready" in log
    run = wait_for_run(run.pk, (RunStatus.SUCCEEDED,), 10)
    admin.screenshot(path=str(screenshots / "run-page-retried.png"), full_page=True)
