"""Parity at request time: a config breaking an `equal` rule is refused, or warned about."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.urls import reverse

from accounts_app.models import Account, AccountRequest, AccountStatus, Purpose
from accounts_app.services import RequestInvalid, request_account
from tests.conftest import token_client
from tests.factories import AccountFactory, UserFactory
from tests.integration.test_api import API
from tests.integration.test_parity_report import PROD_CONFIG
from tests.integration.test_web_pages import client_for, sandbox_post

pytestmark = pytest.mark.django_db

QA_CONFIG = {**PROD_CONFIG, "account_name": "qa-req", "cidr": "10.60.0.0/16"}


@pytest.fixture
def production() -> Account:
    return AccountFactory(
        name="prod", purpose=Purpose.PRODUCTION, status=AccountStatus.READY, config=PROD_CONFIG
    )


@pytest.fixture
def warning_sandbox(tmp_path: Path, settings: Any, blueprints_root: Path) -> None:
    """The sandbox blueprint with its qa rule under enforce: warn."""
    shutil.copytree(blueprints_root / "sandbox", tmp_path / "sandbox")
    spec_file = tmp_path / "sandbox" / "blueprint.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["parity"]["purposes"]["qa"]["enforce"] = "warn"
    spec_file.write_text(yaml.safe_dump(spec))
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path


def test_a_qa_request_without_production_zone_is_refused_naming_path_rule_and_value(
    production: Account,
) -> None:
    user = UserFactory(roles=["requesters"])
    with pytest.raises(RequestInvalid) as error:
        request_account(user=user, name="qa-req", blueprint="sandbox", purpose="qa",
                        config={**QA_CONFIG, "dns_zone": "qa.internal"})  # fmt: skip
    [message] = error.value.errors_by_path["$.dns_zone"]
    assert message == (
        "must equal production's value prod.internal (parity rule equal for qa, production prod)"
    )
    assert error.value.errors["config"] == [f"$.dns_zone: {message}"]
    assert not Account.objects.filter(name="qa-req").exists()
    # Production's values pass; a purpose without equal rules is not held to them.
    request_account(user=user, name="qa-req", blueprint="sandbox", purpose="qa", config=QA_CONFIG)
    request_account(user=user, name="demo-req", blueprint="sandbox", purpose="demo",
                    config={**QA_CONFIG, "dns_zone": "demo.internal"})  # fmt: skip


def test_the_api_answers_400_naming_the_path(production: Account) -> None:
    client = token_client(UserFactory(roles=["requesters"]))
    body = {
        "name": "lt-req",
        "blueprint": "sandbox",
        "purpose": "loadtest",
        "config": {**QA_CONFIG, "instance_size": "small"},
    }
    answer = client.post(f"{API}accounts/", body, format="json")
    assert answer.status_code == 400
    assert answer.json()["config"] == [
        "$.instance_size: must equal production's value large "
        "(parity rule equal for loadtest, production prod)"
    ]


def test_the_form_shows_the_refusal_next_to_the_field(production: Account) -> None:
    sales = UserFactory(roles=["requesters"])
    response = client_for(sales).post(
        reverse("request-form", args=["sandbox"]),
        sandbox_post(purpose="qa", **{"c.dns_zone": "acme.internal"}),
    )
    assert response.status_code == 400
    zone = response.context["config_form"].node_at("$.dns_zone")
    assert any("must equal production's value prod.internal" in e for e in zone.errors)


def test_under_warn_the_request_is_accepted_and_the_approver_sees_the_warning(
    production: Account, warning_sandbox: None
) -> None:
    user = UserFactory(roles=["requesters"])
    _, req = request_account(user=user, name="qa-warn", blueprint="sandbox", purpose="qa",
                             config={**QA_CONFIG, "dns_zone": "qa.internal"})  # fmt: skip
    req = AccountRequest.objects.get(pk=req.pk)
    assert req.parity_warnings == [
        "dns_zone: must equal production's value prod.internal "
        "(parity rule equal for qa, production prod)"
    ]
    approver = UserFactory(roles=["approvers"])
    page = client_for(approver).get(reverse("approvals")).content.decode()
    assert "differs from production: dns_zone: must equal production&#x27;s value" in page
