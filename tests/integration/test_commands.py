"""The management commands, as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model

from accounts_app.models import Account
from accounts_app.production import SYSTEM_USERNAME
from pipelines.models import PipelineRun, RunStatus
from tests.conftest import run_command

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_EXAMPLE = ROOT / "blueprints" / "sandbox" / "examples" / "demo.yaml"


def test_blueprint_list_shows_name_version_title() -> None:
    code, out, _ = run_command("blueprint_list")
    assert code == 0
    lines = {line.split()[0]: line.split(None, 2) for line in out.splitlines()}
    assert lines["sandbox"][1:] == ["1.0.0", "Sandbox (offline)"]
    assert lines["service-platform"][1] == "1.0.0"


def test_blueprint_render_prints_each_file_with_its_sha256(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_command(
        "blueprint_render", "sandbox", "--config", str(SANDBOX_EXAMPLE), "--out", str(out_dir)
    )
    assert code == 0, err
    printed = dict(reversed(line.split("  ", 1)) for line in out.splitlines())
    assert "main.tf" in printed
    for path, digest in printed.items():
        assert hashlib.sha256((out_dir / path).read_bytes()).hexdigest() == digest
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert {entry["path"]: entry["sha256"] for entry in manifest} == printed


def test_blueprint_render_bad_config_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"cidr": "10.0.0.0/99", "services": [{"name": "Web!"}]}))
    out_dir = tmp_path / "out"
    code, out, err = run_command(
        "blueprint_render", "sandbox", "--config", str(config), "--out", str(out_dir)
    )
    assert code == 2
    assert err.splitlines() == [
        "$.cidr: '10.0.0.0/99' does not match "
        "'^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])"
        "/([89]|1[0-9]|2[0-8])$'",
        "$.services[0].name: 'Web!' does not match '^[a-z][a-z0-9_]{1,30}$'",
    ]
    assert not out_dir.exists()


def test_blueprint_render_unknown_blueprint_names_the_directory(tmp_path: Path, settings) -> None:
    code, _, err = run_command(
        "blueprint_render", "nope", "--config", str(SANDBOX_EXAMPLE), "--out", str(tmp_path)
    )
    assert code == 2
    assert str(settings.PORTAL_BLUEPRINTS_DIR) in err


@pytest.mark.django_db
def test_account_provision_without_owner_works_on_a_fresh_database(tmp_path: Path) -> None:
    assert not get_user_model().objects.exists()  # a fresh database: nobody, no admin
    config = tmp_path / "config.yaml"
    config.write_text("label: first\n")

    code, out, err = run_command(
        "account_provision", "--name", "cli-fresh", "--blueprint", "render-only",
        "--config", str(config), "--purpose", "demo",
    )  # fmt: skip

    assert code == 0, err
    run = PipelineRun.objects.get(pk=int(out.strip()))
    owner = run.account.owner
    assert owner.username == SYSTEM_USERNAME
    assert not owner.has_usable_password()
    assert not (owner.is_staff or owner.is_superuser)
    assert not get_user_model().objects.filter(username="admin").exists()

    code, _, err = run_command(
        "account_provision", "--name", "cli-fresh-2", "--blueprint", "render-only",
        "--config", str(config), "--purpose", "demo",
    )  # fmt: skip
    assert code == 0, err
    assert list(get_user_model().objects.values_list("username", flat=True)) == [SYSTEM_USERNAME]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_account_provision_waits_for_success_and_reuses_the_account(
    celery_worker, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("label: first\n")

    code, out, err = run_command(
        "account_provision", "--name", "cli-demo", "--blueprint", "render-only",
        "--config", str(config), "--purpose", "demo", "--wait", "--poll", "0.3",
    )  # fmt: skip

    assert code == 0, err
    run = PipelineRun.objects.get(pk=int(out.strip()))
    assert (run.status, run.account.name, run.account.purpose) == ("succeeded", "cli-demo", "demo")
    assert "render" in err and "succeeded" in err

    config.write_text("label: second\n")
    code, out, err = run_command(
        "account_provision", "--name", "cli-demo", "--blueprint", "render-only",
        "--config", str(config), "--wait", "--poll", "0.3",
    )  # fmt: skip
    assert code == 0, err
    assert Account.objects.count() == 1
    assert Account.objects.get().config == {"label": "second"}
    assert PipelineRun.objects.get(pk=int(out.strip())).status == RunStatus.SUCCEEDED


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_account_provision_exit_codes_for_bad_input_and_failure(
    celery_worker, tmp_path: Path, blueprints_root: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("label: 42\n")
    code, _, err = run_command(
        "account_provision", "--name", "cli-bad", "--blueprint", "render-only",
        "--config", str(config),
    )  # fmt: skip
    assert (code, err.strip()) == (2, "$.label: 42 is not of type 'string'")
    assert not Account.objects.exists()

    code, _, err = run_command(
        "account_provision", "--name", "cli-bad", "--blueprint", "render-only",
        "--config", str(tmp_path / "missing.yaml"),
    )  # fmt: skip
    assert code == 2 and "--config: no such file" in err

    # A template that fails to render makes the run fail: exit 1.
    broken = blueprints_root / "broken-render"
    (broken / "terraform").mkdir(parents=True, exist_ok=True)
    (broken / "blueprint.yaml").write_text(
        "name: broken-render\ntitle: Broken\nversion: '1'\nstages: [render]\n"
    )
    (broken / "terraform" / "main.tf.j2").write_text("x = {{ config.missing }}\n")
    config.write_text("{}\n")
    code, _, err = run_command(
        "account_provision", "--name", "cli-broken", "--blueprint", "broken-render",
        "--config", str(config), "--wait", "--poll", "0.3",
    )  # fmt: skip
    assert code == 1
    assert "render failed" in err


def test_a_database_that_cannot_be_reached_is_said_in_one_line_without_the_password() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": "postgres://postgres:not-this-one@127.0.0.1:5432/portal_no_such_database",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "not-this-one" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("the portal's database (DATABASE_URL) cannot be reached: ")
    assert 'database "portal_no_such_database" does not exist' in line
