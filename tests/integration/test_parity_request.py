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
from pipelines.models import PipelineRun
from tests.conftest import run_command, token_client
from tests.factories import AccountFactory, UserFactory
from tests.integration.test_api import API
from tests.integration.test_parity_report import PROD_CONFIG
from tests.integration.test_web_pages import client_for, sandbox_post

pytestmark = pytest.mark.django_db

QA_CONFIG = {**PROD_CONFIG, "cidr": "10.60.0.0/16"}


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
        "must equal production's value prod.internal "
        "(parity rule for qa: equal [dns_zone], production prod)"
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
        "(parity rule for loadtest: equal [instance_size], production prod)"
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
        "(parity rule for qa: equal [dns_zone], production prod)"
    ]
    approver = UserFactory(roles=["approvers"])
    page = client_for(approver).get(reverse("approvals")).content.decode()
    assert "differs from production: dns_zone: must equal production&#x27;s value" in page


def test_the_form_for_a_loadtest_offers_productions_values_locked(production: Account) -> None:
    sales = client_for(UserFactory(roles=["requesters"]))
    url = reverse("request-form", args=["sandbox"])
    response = sales.get(url + "?purpose=loadtest")
    form = response.context["config_form"]
    size = form.node_at("$.instance_size")
    assert size.value == "large" and size.read_only and size.lock_root
    services = form.node_at("$.services")
    assert [row.path for row in services.rows] == ["$.services[0]", "$.services[1]"]
    assert not services.can_add  # no blank row, no "Add a service"
    assert form.node_at("$.services[1].name").read_only
    assert form.node_at("$.cidr").lock is None  # not an equal path: the user's own
    page = response.content.decode()
    assert "As in production (prod): locked for load test accounts." in page
    assert '<select id="id_c-instance_size" name="c.instance_size" disabled' in page
    assert '<input type="hidden" name="c.instance_size" value="large">' in page
    assert 'name="c.services.1.name" value="orders" maxlength="31" readonly' in page
    # A purpose without equal rules is the user's to fill in.
    demo = sales.get(url + "?purpose=demo").context["config_form"]
    assert demo.node_at("$.instance_size").lock is None
    assert demo.node_at("$.instance_size").value == "small"


def test_a_tampered_post_of_a_locked_field_is_refused_naming_path_rule_and_value(
    production: Account,
) -> None:
    sales = client_for(UserFactory(roles=["requesters"]))
    post = sandbox_post(
        name="lt-form",
        purpose="loadtest",
        expires_on=None,
        **{"c.instance_size": "small", "c.services.1.database": "on"},
    )
    response = sales.post(reverse("request-form", args=["sandbox"]), post)
    assert response.status_code == 400
    size = response.context["config_form"].node_at("$.instance_size")
    assert size.errors == [
        "must equal production's value large "
        "(parity rule for loadtest: equal [instance_size], production prod)"
    ]
    assert size.read_only  # still offered locked, with the refused value shown
    assert not Account.objects.filter(name="lt-form").exists()
    # Production's values pass.
    response = sales.post(
        reverse("request-form", args=["sandbox"]), {**post, "c.instance_size": "large"}
    )
    assert response.status_code == 302
    assert Account.objects.get(name="lt-form").config["instance_size"] == "large"


def test_changing_the_purpose_redraws_the_form_with_productions_values(
    production: Account,
) -> None:
    sales = client_for(UserFactory(roles=["requesters"]))
    post = sandbox_post(purpose="loadtest", submit=None, purpose_changed="1")
    response = sales.post(reverse("request-form", args=["sandbox"]), post)
    assert response.status_code == 200
    form = response.context["config_form"]
    assert form.node_at("$.instance_size").value == "large"  # production's, not the posted one
    assert form.node_at("$.cidr").value == "10.40.0.0/16"  # the user's value kept
    assert not form.has_errors
    assert response.context["meta"]["name"].value() == "acme-demo"
    assert response.context["held_purposes"] == ["qa", "loadtest"]


def _config_file(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_account_provision_refuses_a_rule_under_refuse_with_exit_2(
    production: Account, tmp_path: Path
) -> None:
    config = _config_file(tmp_path, {**QA_CONFIG, "instance_size": "small"})
    code, out, err = run_command(
        "account_provision", "--name", "lt-cli", "--blueprint", "sandbox",
        "--config", config, "--purpose", "loadtest",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.strip() == (
        "$.instance_size: must equal production's value large "
        "(parity rule for loadtest: equal [instance_size], production prod)"
    )
    assert not Account.objects.filter(name="lt-cli").exists()
    assert not PipelineRun.objects.exists()


def test_account_provision_under_warn_accepts_prints_and_records_the_warning(
    production: Account, warning_sandbox: None, tmp_path: Path
) -> None:
    config = _config_file(tmp_path, {**QA_CONFIG, "dns_zone": "qa.internal"})
    code, out, err = run_command(
        "account_provision", "--name", "qa-cli", "--blueprint", "sandbox",
        "--config", config, "--purpose", "qa",
    )  # fmt: skip
    assert code == 0, err
    warning = (
        "dns_zone: must equal production's value prod.internal "
        "(parity rule for qa: equal [dns_zone], production prod)"
    )
    assert f"warning: differs from production: {warning}" in err.splitlines()
    run = PipelineRun.objects.get(pk=int(out))
    assert run.account.name == "qa-cli"
    req = AccountRequest.objects.get(account=run.account)
    assert (req.status, req.parity_warnings) == ("auto_approved", [warning])
