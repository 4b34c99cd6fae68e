"""Extending an account in a real browser: within the limit at once, beyond it through an
approver; the expiry shows its time zone and a live countdown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts_app import expiry
from accounts_app.models import AccountStatus
from tests.browser.test_portal_browser import log_in
from tests.factories import AccountFactory, UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


def test_owner_extends_and_an_approver_allows_more(new_page: Any, screenshots: Path) -> None:
    owner = UserFactory(username="sue-sales", roles=["requesters"])
    UserFactory(username="abe-approver", roles=["approvers"])
    account = AccountFactory(
        name="pilot-demo",
        owner=owner,
        purpose="demo",
        status=AccountStatus.READY,
        expires_at=timezone.now() + timedelta(days=2, hours=3),
    )
    limit = expiry.extension_limit(account)
    assert limit is not None  # demo: 30 days from creation

    sue = new_page()
    log_in(sue, "sue-sales")
    sue.goto(f"/accounts/{account.pk}/")
    shown = sue.locator("#expiry time.expiry").first.inner_text()
    assert shown.endswith("UTC")
    countdown = sue.locator("#expiry .countdown").first
    assert re.fullmatch(r"in 2 d 3 h|in 2 d 2 h", countdown.inner_text()), countdown.inner_text()

    within = (limit - timedelta(days=1)).date()
    sue.fill("#extend-on", within.isoformat())
    sue.fill("#extend-reason", "the prospect asked for another week")
    sue.click("#extend-form button:has-text('Extend')")
    sue.wait_for_selector("text=Extended pilot-demo to")
    account.refresh_from_db()
    assert account.expires_at == datetime.combine(within, datetime.min.time(), tzinfo=UTC)
    assert f"{account.expires_at:%Y-%m-%d %H:%M} UTC" in sue.locator("#expiry").inner_text()

    beyond = (limit + timedelta(days=14)).date()
    sue.fill("#extend-on", beyond.isoformat())
    sue.click("#extend-form button:has-text('Extend')")
    sue.wait_for_selector("text=waits for an approver")
    assert sue.locator("#extension-pending").is_visible()
    assert sue.locator("#extend-form").count() == 0  # one pending extension at a time
    sue.screenshot(path=str(screenshots / "extend-pending.png"), full_page=True)

    abe = new_page()
    log_in(abe, "abe-approver")
    abe.goto("/approvals/")
    card = abe.locator("section[id^='extension-']").first
    assert "pilot-demo" in card.inner_text()
    card.locator("button:has-text('Approve extension')").click()
    abe.wait_for_selector("text=Approved the extension of pilot-demo")

    sue.goto(f"/accounts/{account.pk}/")
    account.refresh_from_db()
    assert account.expires_at == datetime.combine(beyond, datetime.min.time(), tzinfo=UTC)
    assert f"{account.expires_at:%Y-%m-%d %H:%M} UTC" in sue.locator("#expiry").inner_text()
    assert "Approved" in sue.locator("#expiry").inner_text()
