"""The parity report over the API, and registering production through it (admins only)."""

from __future__ import annotations

import pytest

from accounts_app.models import Account, AccountStatus, ParityReport, Purpose
from pipelines.models import PipelineRun
from tests.conftest import token_client
from tests.factories import UserFactory
from tests.integration.test_api import API
from tests.integration.test_parity_report import (
    PROD_CONFIG,
    REPORT_KEYS,
    clone,
    production_account,
)
from tests.integration.test_production import state_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def production() -> Account:
    return production_account()


def test_the_owner_gets_the_report_and_recomputes_it(production) -> None:
    account = clone(name="qa-api", purpose=Purpose.QA, config={"dns_zone": "qa.internal"})
    owner = token_client(account.owner)
    answer = owner.get(f"{API}accounts/{account.pk}/parity/")
    assert answer.status_code == 200, answer.content
    report = answer.json()
    assert set(report) == REPORT_KEYS
    assert report["in_parity"] is False
    zone = next(c for c in report["checks"] if c["path"] == "dns_zone")
    assert (zone["status"], zone["clone"], zone["production"]) == (
        "differs",
        "qa.internal",
        "prod.internal",
    )
    # The stored report is served again; recompute=1 makes a new one.
    assert owner.get(f"{API}accounts/{account.pk}/parity/").json() == report
    assert ParityReport.objects.count() == 1
    account.config = {**account.config, "dns_zone": "prod.internal"}
    account.save(update_fields=["config"])
    again = owner.get(f"{API}accounts/{account.pk}/parity/?recompute=1").json()
    assert again["in_parity"] is True
    assert ParityReport.objects.count() == 2
    assert owner.get(f"{API}accounts/{account.pk}/parity/?recompute=maybe").status_code == 400


def test_others_see_404_and_no_reference_is_409(production) -> None:
    account = clone(name="qa-hidden", purpose=Purpose.QA)
    stranger = token_client(UserFactory(roles=["requesters"]))
    assert stranger.get(f"{API}accounts/{account.pk}/parity/").status_code == 404
    admin = token_client(UserFactory(roles=["admins"]))
    answer = admin.get(f"{API}accounts/{production.pk}/parity/")
    assert answer.status_code == 409
    assert "is production" in answer.json()["detail"]


def test_admins_register_production_and_nobody_else_does() -> None:
    body = {
        "name": "prod",
        "blueprint": "sandbox",
        "purpose": "production",
        "config": PROD_CONFIG,
        "state": state_document(),
    }
    requester = token_client(UserFactory(roles=["requesters", "approvers"]))
    assert requester.post(f"{API}accounts/", body, format="json").status_code == 403
    admin = token_client(UserFactory(roles=["admins"]))
    answer = admin.post(f"{API}accounts/", body, format="json")
    assert answer.status_code == 201, answer.content
    assert (answer.json()["purpose"], answer.json()["protected"]) == ("production", True)
    account = Account.objects.get(name="prod")
    assert account.status == AccountStatus.READY and len(account.resources) == 2
    assert PipelineRun.objects.count() == 0
    assert "hunter2-prod-secret" not in answer.content.decode()
    # Again: the registration is updated.
    again = admin.post(f"{API}accounts/", body | {"cloud_account_id": "123"}, format="json")
    assert again.status_code == 200
    bad = admin.post(
        f"{API}accounts/",
        body
        | {
            "config": {**PROD_CONFIG, "cidr": "nope"},
            "state": {"format_version": "1", "values": 1},
        },
        format="json",
    )
    assert bad.status_code == 400
    problems = bad.json()
    assert [p for p in problems["config"] if p.startswith("$.cidr:")]
    assert problems["state"] == ["values must be a mapping"]
