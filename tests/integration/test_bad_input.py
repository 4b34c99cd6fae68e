"""Bad input through the API and the commands: a 400 or exit 2 naming the field, fast.

Trailing newlines that Python's "$" lets through, deep nesting, megabyte strings and
YAML bombs (issue 9, "Bad input").
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from accounts_app.models import Account
from tests.conftest import run_command, token_client
from tests.factories import SANDBOX_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

API = "/api/v1/"
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def request_body(**config: Any) -> dict[str, Any]:
    return {
        "name": "bad-input",
        "blueprint": "sandbox",
        "purpose": "demo",
        "config": {**SANDBOX_CONFIG, **config},
    }


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


# --- API ------------------------------------------------------------------------------------


def test_a_trailing_newline_is_refused_in_the_name_and_in_the_config(sally: Any) -> None:
    client = token_client(sally)
    answer = client.post(f"{API}accounts/", request_body(account_name="nl-probe\n"), format="json")
    assert answer.status_code == 400, answer.content
    assert [m for m in answer.json()["config"] if m.startswith("$.account_name: ")]

    zone = client.post(f"{API}accounts/", request_body(dns_zone="qa.internal\n"), format="json")
    assert zone.status_code == 400
    assert [m for m in zone.json()["config"] if m.startswith("$.dns_zone: ")]
    assert not Account.objects.exists()


def test_a_body_too_deep_for_the_json_parser_is_a_400(sally: Any) -> None:
    client = token_client(sally)
    body = '{"name": "deep-body", "config": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = client.post(f"{API}accounts/", body, content_type="application/json")
    assert answer.status_code == 400
    assert "nested too deeply" in answer.json()["detail"]


def test_a_deeply_nested_config_is_a_400_naming_the_path(sally: Any) -> None:
    client = token_client(sally)
    answer = client.post(f"{API}accounts/", request_body(services=deep(500)), format="json")
    assert answer.status_code == 400, answer.content[:300]
    (message,) = answer.json()["config"]
    assert message.startswith("$.services[0]") and "nested deeper than 8 levels" in message
    preview = client.post(
        f"{API}blueprints/sandbox/render/", {"config": {"x": deep(500)}}, format="json"
    )
    assert preview.status_code == 400
    assert "nested deeper than" in preview.json()["config"][0]


def test_a_megabyte_string_is_a_quick_400_naming_the_field(sally: Any) -> None:
    client = token_client(sally)
    started = time.monotonic()
    answer = client.post(
        f"{API}accounts/", request_body(dns_zone="a" * 1_000_000 + ".internal"), format="json"
    )
    assert answer.status_code == 400
    assert answer.json()["config"] == [
        "$.dns_zone: 1000009 characters long, more than the limit of 1024"
    ]
    assert time.monotonic() - started < 10
    zone = client.post(f"{API}accounts/", request_body(dns_zone="a." * 200 + "qa"), format="json")
    assert zone.status_code == 400
    assert any("is too long" in m for m in zone.json()["config"]), zone.json()


def test_the_account_model_refuses_a_name_with_a_trailing_newline(sally: Any) -> None:
    account = Account(name="nl-probe\n", blueprint="sandbox", owner=sally)
    with pytest.raises(ValidationError) as refused:
        account.full_clean()
    assert set(refused.value.message_dict) == {"name"}


# --- commands -------------------------------------------------------------------------------


def test_account_provision_refuses_a_name_with_a_trailing_newline(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("label: fine\n")
    code, _, err = run_command(
        "account_provision", "--name", "cli-nl\n", "--blueprint", "render-only",
        "--config", str(config),
    )  # fmt: skip
    assert code == 2
    assert err.startswith("--name: ")
    assert not Account.objects.exists()


@pytest.mark.parametrize("command", ["blueprint_render", "blueprint_plan", "account_provision"])
def test_a_yaml_bomb_is_refused_quickly_with_one_line(command: str, tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB)
    args = {
        "blueprint_render": ["blueprint_render", "sandbox", "--out", str(tmp_path / "out")],
        "blueprint_plan": ["blueprint_plan", "sandbox"],
        "account_provision": ["account_provision", "--name", "bomb", "--blueprint", "sandbox"],
    }[command]
    started = time.monotonic()
    code, out, err = run_command(*args, "--config", str(config))
    assert time.monotonic() - started < 5
    assert code == 2 and out == ""
    assert err.strip() == (
        f"--config: {config}: holds more than 100000 values once its aliases are expanded, "
        "the limit"
    )


def test_many_problems_are_printed_in_part(tmp_path: Path) -> None:
    config = tmp_path / "many.yaml"
    config.write_text("account_name: many\nservices:\n" + "- name: BAD\n" * 40 + "x: 1\n")
    code, _, err = run_command(
        "blueprint_render", "sandbox", "--config", str(config), "--out", str(tmp_path / "out")
    )
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 51 and lines[-1].startswith("$: ... and ")


def test_blueprint_render_refuses_an_account_name_with_a_newline(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "blueprints/sandbox/examples/demo.yaml"
    code, _, err = run_command(
        "blueprint_render", "sandbox", "--config", str(example), "--out", str(tmp_path),
        "--account-name", "acme-demo\n",
    )  # fmt: skip
    assert code == 2 and err.startswith("--account-name: ")
