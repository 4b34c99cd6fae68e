"""One name: the account's name is the only source of its name.

A config that still carries ``account_name`` is refused when it names another account
(API 400, command exit 2), and accepted and dropped when it is the account's own name.
Templates see the name as ``account.name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from accounts_app.models import Account, AccountStatus, Purpose
from accounts_app.services import preview_files
from pipelines.blueprints import ConfigInvalid, load_blueprint
from pipelines.models import PipelineRun
from pipelines.services import start_run
from tests.conftest import run_command, token_client
from tests.factories import SANDBOX_CONFIG, AccountFactory, UserFactory
from tests.integration.test_api import API, request_body

pytestmark = pytest.mark.django_db

REFUSED = (
    "$.account_name: must be the account's name {name!r} or left out: an account's name is "
    "the one source of its name"
)


def config_file(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_api_refuses_another_name_and_drops_the_same_one() -> None:
    client = token_client(UserFactory(roles=["requesters"]))
    other = {**SANDBOX_CONFIG, "account_name": "something-else"}
    answer = client.post(f"{API}accounts/", request_body("lt-api", config=other), format="json")
    assert answer.status_code == 400
    assert answer.json()["config"] == [REFUSED.format(name="lt-api")]
    assert not Account.objects.filter(name="lt-api").exists()

    same = {**SANDBOX_CONFIG, "account_name": "lt-api"}
    answer = client.post(f"{API}accounts/", request_body("lt-api", config=same), format="json")
    assert answer.status_code == 201, answer.json()
    assert "account_name" not in Account.objects.get(name="lt-api").config


def test_account_provision_refuses_another_name_with_exit_2(tmp_path: Path) -> None:
    config = config_file(tmp_path, {**SANDBOX_CONFIG, "account_name": "acme-demo"})
    code, out, err = run_command(
        "account_provision", "--name", "cli-demo", "--blueprint", "sandbox", "--config", config
    )
    assert (code, out, err.strip()) == (2, "", REFUSED.format(name="cli-demo"))
    assert not Account.objects.exists()


def test_the_shipped_example_renders_with_the_accounts_own_name(tmp_path: Path) -> None:
    blueprint = load_blueprint("sandbox")
    assert "account_name" not in blueprint.parameters["properties"]
    assert "account_name" not in blueprint.parity.allowed_differences
    example = yaml.safe_load((blueprint.path / "examples" / "demo.yaml").read_text())
    assert "account_name" not in example
    files = preview_files(blueprint=blueprint, config=example, account_name="cli-demo",
                          purpose=Purpose.DEMO)  # fmt: skip
    locals_tf = files["locals.tf"].decode()
    assert 'account_name  = "cli-demo"' in locals_tf and 'acme-demo"' not in locals_tf

    out = tmp_path / "out"
    code, _, err = run_command(
        "blueprint_render", "sandbox", "--config", str(blueprint.path / "examples" / "demo.yaml"),
        "--account-name", "cli-demo", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert 'account_name  = "cli-demo"' in (out / "locals.tf").read_text()


def test_account_register_refuses_another_name(tmp_path: Path) -> None:
    config = config_file(tmp_path, {**SANDBOX_CONFIG, "account_name": "acme-demo"})
    code, _, err = run_command(
        "account_register", "--name", "prod", "--blueprint", "sandbox", "--config", config
    )
    assert (code, err.strip()) == (2, REFUSED.format(name="prod"))


def test_a_stored_config_naming_another_account_cannot_start_a_run() -> None:
    account = AccountFactory(
        name="old-one",
        status=AccountStatus.READY,
        config={**SANDBOX_CONFIG, "account_name": "something-else"},
    )
    with pytest.raises(ConfigInvalid) as refused:
        start_run(account, "update")
    assert [str(p) for p in refused.value.problems] == [REFUSED.format(name="old-one")]
    assert not PipelineRun.objects.exists()
    # Its own name is dropped: the run starts with the config the blueprint declares.
    Account.objects.filter(pk=account.pk).update(
        config={**SANDBOX_CONFIG, "account_name": "old-one"}
    )
    account.refresh_from_db()
    run = start_run(account, "update")
    assert "account_name" not in run.config
