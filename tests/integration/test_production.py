"""Production accounts: registered as they are, always protected, never written to."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.production import SYSTEM_USERNAME
from accounts_app.services import RequestInvalid, request_account
from pipelines.models import PipelineRun, RunKind
from pipelines.parity import SENSITIVE_KEY
from pipelines.services import RunRefused, expire_accounts, start_run
from tests.conftest import run_command
from tests.factories import AccountFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PROD_CONFIG = {
    "cidr": "10.0.0.0/16",
    "dns_zone": "prod.internal",
    "instance_size": "large",
    "services": [{"name": "web"}, {"name": "orders", "database": True}],
}


def state_document() -> dict:
    """`terraform show -json` of a state: one root resource, one in a child module."""
    return {
        "format_version": "1.0",
        "terraform_version": "1.9.0",
        "values": {
            "root_module": {
                "resources": [
                    {
                        "address": "terraform_data.dns_zone",
                        "mode": "managed",
                        "type": "terraform_data",
                        "name": "dns_zone",
                        "values": {"input": {"name": "prod.internal", "private": True}},
                        "sensitive_values": {"input": {}},
                    },
                    {
                        "address": "data.terraform_remote_state.shared",
                        "mode": "data",
                        "type": "terraform_remote_state",
                        "values": {},
                    },
                ],
                "child_modules": [
                    {
                        "address": "module.db",
                        "resources": [
                            {
                                "address": 'module.db.terraform_data.database["orders"]',
                                "mode": "managed",
                                "type": "terraform_data",
                                "values": {
                                    "input": {
                                        "instance_class": "db.r6g.large",
                                        "password": "hunter2-prod-secret",
                                    }
                                },
                                "sensitive_values": {"input": {"password": True}},
                            }
                        ],
                    }
                ],
            }
        },
    }


def files(tmp_path: Path, *, config: dict = PROD_CONFIG, state: object = None) -> list[str]:
    config_file = tmp_path / "prod.yaml"
    config_file.write_text(yaml.safe_dump(config))
    args = ["--config", str(config_file)]
    if state is not None:
        state_file = tmp_path / "state.json"
        state_file.write_text(json.dumps(state))
        args += ["--state-file", str(state_file)]
    return args


def test_register_records_production_as_it_is_and_starts_no_run(tmp_path: Path) -> None:
    code, out, err = run_command(
        "account_register", "--name", "prod", "--blueprint", "sandbox",
        *files(tmp_path, state=state_document()), "--cloud-account-id", "123456789012",
    )  # fmt: skip
    assert code == 0, err
    account = Account.objects.get(pk=int(out.strip()))
    assert (account.name, account.purpose, account.status, account.protected) == (
        "prod",
        Purpose.PRODUCTION,
        AccountStatus.READY,
        True,
    )
    assert account.cloud_account_id == "123456789012"
    assert account.config["instance_size"] == "large"
    assert PipelineRun.objects.count() == 0
    # Owned by the system user, who cannot log in.
    assert account.owner.username == SYSTEM_USERNAME
    assert not account.owner.has_usable_password()
    # Managed resources of every module; the sensitive value kept as a digest only.
    assert [r["address"] for r in account.resources] == [
        'module.db.terraform_data.database["orders"]',
        "terraform_data.dns_zone",
    ]
    database = account.resources[0]
    assert database["type"] == "terraform_data"
    assert database["values"]["input"]["instance_class"] == "db.r6g.large"
    assert set(database["values"]["input"]["password"]) == {SENSITIVE_KEY}
    assert "hunter2-prod-secret" not in json.dumps(account.resources)


def test_register_again_updates_the_registration(tmp_path: Path) -> None:
    assert run_command("account_register", "--name", "prod", "--blueprint", "sandbox",
                       *files(tmp_path, state=state_document()))[0] == 0  # fmt: skip
    changed = {**PROD_CONFIG, "instance_size": "medium"}
    code, _, err = run_command(
        "account_register", "--name", "prod", "--blueprint", "sandbox",
        *files(tmp_path, config=changed),
    )  # fmt: skip
    assert code == 0, err
    account = Account.objects.get()
    assert account.config["instance_size"] == "medium"
    assert len(account.resources) == 2  # no --state-file: the recorded state is kept
    assert "registration updated" in err


def test_register_lists_every_problem_on_its_own_line(tmp_path: Path) -> None:
    bad = {**PROD_CONFIG, "cidr": "10.0.0.0/99", "instance_size": "huge"}
    code, _, err = run_command(
        "account_register", "--name", "Prod!", "--blueprint", "sandbox",
        *files(tmp_path, config=bad, state={"values": {}}), "--cloud-account-id", "x y",
    )  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert any(line.startswith("--name:") for line in lines)
    assert any(line.startswith("$.cidr:") for line in lines)
    assert any(line.startswith("$.instance_size:") for line in lines)
    assert any(line.startswith("--state-file: not the output of terraform show") for line in lines)
    assert any(line.startswith("--cloud-account-id:") for line in lines)
    assert Account.objects.count() == 0


def test_register_refuses_a_missing_file_another_blueprint_and_a_clone_name(
    tmp_path: Path,
) -> None:
    code, _, err = run_command("account_register", "--name", "prod", "--blueprint", "sandbox",
                               "--config", str(tmp_path / "nope.yaml"))  # fmt: skip
    assert code == 2 and err.startswith("--config:")
    AccountFactory(name="qa-one")
    code, _, err = run_command("account_register", "--name", "qa-one", "--blueprint", "sandbox",
                               *files(tmp_path))  # fmt: skip
    assert code == 2 and "exists as a qa account" in err
    code, _, err = run_command("account_register", "--name", "qa-one", "--blueprint",
                               "render-only", *files(tmp_path, config={}))  # fmt: skip
    assert code == 2 and "exists with blueprint 'sandbox'" in err
    assert Account.objects.get().purpose == Purpose.QA


@pytest.mark.django_db(transaction=True)
def test_register_a_production_the_portal_built_reads_its_state_from_the_portal_backend(
    tmp_path: Path, celery_worker: Any, wait_for_run: Any
) -> None:
    config = dict(PROD_CONFIG)
    account = AccountFactory(
        name="prod-built", blueprint="sandbox-infra", purpose=Purpose.STANDBY, config=config
    )
    run = wait_for_run(start_run(account, RunKind.PROVISION).pk, timeout=180)
    assert run.status == "succeeded", run.explanation
    Account.objects.filter(pk=account.pk).update(resources=[])  # not from what apply recorded

    code, _, err = run_command(
        "account_register", "--name", "prod-built", "--blueprint", "sandbox-infra",
        *files(tmp_path, config=config, state=state_document()),
    )  # fmt: skip
    assert code == 2
    assert err.strip() == (
        "--state-file: account 'prod-built' was built by the portal: its state is read from "
        "the portal's own backend, not from a file"
    )

    code, out, err = run_command(
        "account_register", "--name", "prod-built", "--blueprint", "sandbox-infra",
        *files(tmp_path, config=config),
    )  # fmt: skip
    assert code == 0, err
    account.refresh_from_db()
    assert (account.purpose, account.protected, account.status) == (
        Purpose.PRODUCTION,
        True,
        AccountStatus.READY,
    )
    assert [r["address"] for r in account.resources] == [
        "terraform_data.account",
        'terraform_data.database["orders"]',
        "terraform_data.dns_zone",
        "terraform_data.network",
        'terraform_data.service["orders"]',
        'terraform_data.service["web"]',
    ]
    # The state's values, known only after apply (a plan has no id yet).
    assert all(r["values"]["id"] for r in account.resources)
    database = account.resources[1]["values"]
    assert database["input"]["instance_class"] == "db.r6g.large"
    assert PipelineRun.objects.filter(account=account).count() == 1  # no run started
    assert "registration updated: 6 resources" in err or "registered: 6 resources" in err


def test_a_production_account_is_always_protected() -> None:
    account = AccountFactory(purpose=Purpose.PRODUCTION, protected=False)
    account.refresh_from_db()
    assert account.protected
    account.protected = False
    account.save(update_fields=["protected"])
    account.refresh_from_db()
    assert account.protected


@pytest.mark.parametrize("kind", [RunKind.REFRESH_DATA, RunKind.TEARDOWN, RunKind.UPDATE])
def test_production_refuses_teardown_refresh_and_update(kind: RunKind) -> None:
    account = AccountFactory(
        name="prod-data",
        blueprint="sandbox-data",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
    )
    with pytest.raises(RunRefused, match="is protected: it is never written to"):
        start_run(account, kind)
    assert PipelineRun.objects.count() == 0


def test_the_expiry_sweep_skips_production() -> None:
    past = timezone.now() - timedelta(days=1)
    AccountFactory(purpose=Purpose.PRODUCTION, status=AccountStatus.READY, expires_at=past)
    assert expire_accounts() == []
    assert PipelineRun.objects.count() == 0


def test_production_cannot_be_requested() -> None:
    user = UserFactory(roles=["admins"])
    with pytest.raises(RequestInvalid) as error:
        request_account(user=user, name="prod-two", blueprint="sandbox", purpose="production",
                        config=PROD_CONFIG)  # fmt: skip
    assert "registered as it is" in str(error.value.errors["purpose"])


def admin_post(tmp_path: Path, *, config: dict, state: object) -> Any:
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(state))
    with state_file.open("rb") as upload:
        return client.post(
            reverse("admin:accounts_app_account_add"),
            {
                "name": "prod",
                "blueprint": "sandbox",
                "config": json.dumps(config),
                "purpose": "production",
                "owner": staff.pk,
                "cloud_account_id": "",
                "status": "requested",
                "state_file": upload,
            },
        )


def test_the_admin_registers_production_with_its_state(tmp_path: Path) -> None:
    answer = admin_post(tmp_path, config=PROD_CONFIG, state=state_document())
    assert answer.status_code == 302, answer.content.decode()[:2000]
    account = Account.objects.get(name="prod")
    assert (account.purpose, account.status, account.protected) == (
        Purpose.PRODUCTION,
        AccountStatus.READY,
        True,
    )
    assert len(account.resources) == 2
    assert PipelineRun.objects.count() == 0


def test_the_admin_shows_registration_problems_on_their_fields(tmp_path: Path) -> None:
    answer = admin_post(tmp_path, config={**PROD_CONFIG, "cidr": "x"}, state={"values": {}})
    assert answer.status_code == 200
    errors = answer.context["adminform"].form.errors
    assert any(message.startswith("$.cidr:") for message in errors["config"])
    assert errors["state_file"] == ["not the output of terraform show -json (no format_version)"]
    assert not Account.objects.exists()
