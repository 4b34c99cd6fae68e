"""The request form in Chromium: a load test takes production's values, offered locked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from accounts_app.models import Account, AccountStatus, Purpose
from tests.browser.test_portal_browser import log_in
from tests.factories import AccountFactory, UserFactory
from tests.integration.test_parity_report import PROD_CONFIG

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]


def test_a_loadtest_request_shows_productions_values_locked(
    new_page: Any, screenshots: Path
) -> None:
    AccountFactory(
        name="prod", purpose=Purpose.PRODUCTION, status=AccountStatus.READY, config=PROD_CONFIG
    )
    UserFactory(username="quinn-qa", roles=["requesters"])
    page = new_page()
    log_in(page, "quinn-qa")
    page.goto("/request/sandbox/")
    page.fill("#id_name", "lt-browser")
    page.fill("#id_c-cidr", "10.70.0.0/16")
    assert page.is_editable("#id_c-instance_size")
    # Choosing the purpose redraws the form with production's values (the page's script
    # presses the redraw button; without JavaScript the user does).
    with page.expect_navigation():
        page.select_option("#id_purpose", "loadtest")
    size = page.locator("#id_c-instance_size")
    assert size.input_value() == "large" and size.is_disabled()
    assert "As in production (prod): locked for load test accounts." in page.inner_text(
        "#id_c-instance_size-lock"
    )
    assert "As in production (prod)" in page.inner_text("#id_c-services-lock")
    assert page.input_value("#id_c-services-1-name") == "orders"
    assert not page.is_editable("#id_c-services-1-name")
    assert page.is_checked("#id_c-services-1-database")
    assert page.is_disabled("#id_c-services-1-database")
    assert page.locator("button:has-text('Add a service')").count() == 0
    assert page.input_value("#id_name") == "lt-browser"  # the user's values kept
    assert page.input_value("#id_c-cidr") == "10.70.0.0/16"
    page.screenshot(path=str(screenshots / "request-form-loadtest-locked.png"), full_page=True)

    page.click("button:has-text('Submit request')")
    page.wait_for_url(re.compile(r".*/accounts/\d+/$"))
    account = Account.objects.get(name="lt-browser")
    assert account.config["instance_size"] == "large"
    assert account.config["services"] == PROD_CONFIG["services"]
