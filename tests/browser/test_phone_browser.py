"""Pages at a phone's width (390 px): nothing cut off, the accounts table readable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from accounts_app.models import AccountStatus
from tests.browser.test_portal_browser import log_in
from tests.factories import AccountFactory, PipelineRunFactory, UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
]

PHONE = {"width": 390, "height": 844}


def test_the_accounts_table_is_whole_at_390_px(new_page: Any, screenshots: Path) -> None:
    owner = UserFactory(username="pat-phone", roles=["requesters"])
    for index in range(3):
        account = AccountFactory(
            name=f"acme-loadtest-environment-{index}", owner=owner, status=AccountStatus.READY
        )
        PipelineRunFactory(account=account, kind="provision", status="succeeded")
    page = new_page(**PHONE)
    log_in(page, "pat-phone")
    page.screenshot(path=str(screenshots / "dashboard-stacked-390px.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # Every cell of a row is on the screen, each with its column's name.
    row = page.locator("table.accounts tbody tr").first
    for label in ("Name", "Blueprint", "Purpose", "Owner", "Status", "Expires", "Latest run"):
        cell = row.locator(f"td[data-label='{label}']")
        assert cell.is_visible(), label
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, label
    assert "acme-loadtest-environment-0" in row.inner_text()
    assert "provision" in row.locator("td[data-label='Latest run']").inner_text().lower()

    page.goto("/no/such/page/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("nav[aria-label=Main]").is_visible()
    page.screenshot(path=str(screenshots / "not-found-390px.png"), full_page=True)
