"""The parity table on the account page: what differs first; "Check parity now"."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts_app.models import AccountStatus, ParityReport, Purpose
from accounts_app.parity import compute_report
from tests.factories import AccountFactory, PipelineRunFactory, StageRunFactory, UserFactory
from tests.integration.test_parity_report import PROD_CONFIG, clone, resources
from tests.integration.test_web_pages import client_for

pytestmark = pytest.mark.django_db


def test_the_account_page_lists_what_differs_first_and_checks_on_demand() -> None:
    AccountFactory(
        name="prod",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
        config=PROD_CONFIG,
        resources=resources(),
        registered_version="1.0.0",
    )
    account = clone(name="qa-page", purpose=Purpose.QA, resources=resources(zone=False))
    browser = client_for(account.owner)
    page = browser.get(reverse("account-detail", args=[account.pk])).content.decode()
    assert "No parity report yet." in page

    answer = browser.post(reverse("account-parity-check", args=[account.pk]), follow=True)
    page = answer.content.decode()
    assert "Parity checked: qa-page is out of parity." in page
    assert ParityReport.objects.filter(account=account, in_parity=False).count() == 1
    table = page[page.index('id="parity"') :]
    differing = table.index("resource terraform_data.dns_zone")
    assert differing < table.index("cidr") < table.index(">dns_zone<")
    assert "each account has its own network range" in table

    stranger = client_for(UserFactory(roles=["requesters"]))
    assert stranger.post(reverse("account-parity-check", args=[account.pk])).status_code == 404


def test_no_production_reference_is_an_error_message_not_a_crash() -> None:
    account = clone(name="qa-lonely", purpose=Purpose.QA)
    answer = client_for(account.owner).post(
        reverse("account-parity-check", args=[account.pk]), follow=True
    )
    assert answer.status_code == 200
    assert "is not registered" in answer.content.decode()


PLAN_OUTPUTS = {
    "add": 1,
    "change": 0,
    "replace": 0,
    "destroy": 0,
    "has_changes": True,
    "resources": [],
    "parity": {
        "production": "prod",
        "checked": True,
        "in_parity": False,
        "enforce": "warn",
        "checks": [
            {
                "path": "resource terraform_data.dns_zone",
                "status": "differs",
                "clone": "missing",
                "production": "present",
                "rule": "resources addresses",
                "reason": "",
            }
        ],
    },
}


def test_the_run_page_shows_the_plan_parity_result() -> None:
    account = AccountFactory()
    run = PipelineRunFactory(account=account)
    StageRunFactory(run=run, position=0, kind="plan", status="succeeded", outputs=PLAN_OUTPUTS)
    page = client_for(account.owner).get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "Parity with production prod" in page
    assert "resource terraform_data.dns_zone: missing (production present)" in page


def test_the_plan_approval_page_shows_the_plan_parity_result() -> None:
    run = PipelineRunFactory(account=AccountFactory(name="lt-plan"), status="waiting_approval")
    StageRunFactory(run=run, position=0, kind="plan", status="succeeded", outputs=PLAN_OUTPUTS)
    waiting = StageRunFactory(run=run, position=1, kind="approve_plan", status="waiting_approval")
    approver = UserFactory(roles=["approvers"])
    page = client_for(approver).get(reverse("approvals")).content.decode()
    card = page[page.index(f'id="plan-{waiting.pk}"') :]
    card = card[: card.index("</section>")]
    assert "Parity with production prod" in card and "out of parity" in card
    assert "resource terraform_data.dns_zone: missing (production present)" in card


def test_the_dashboard_badges_parity_and_filters_out_of_parity() -> None:
    AccountFactory(
        name="prod",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
        config=PROD_CONFIG,
        resources=resources(),
    )
    admin = UserFactory(roles=["admins"])
    good = clone(name="qa-good", purpose=Purpose.QA, owner=admin)
    bad = clone(name="qa-bad", purpose=Purpose.QA, owner=admin, config={"dns_zone": "x.internal"})
    clone(name="qa-never", purpose=Purpose.QA, owner=admin)
    for account in (good, bad):
        compute_report(account=account)
    browser = client_for(admin)
    page = browser.get(reverse("dashboard")).content.decode()
    assert page.count(">out of parity</a>") == 1 and page.count(">in parity</span>") == 1
    only = browser.get(reverse("dashboard") + "?parity=out").content.decode()
    assert "qa-bad" in only and "qa-good" not in only and "qa-never" not in only
