"""`manage.py blueprint_plan`: a plan on an engineer's machine, with real Terraform.

Run as a real subprocess whose DATABASE_URL points at a port where nothing listens:
the command must need no database (and no worker).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_EXAMPLE = ROOT / "blueprints" / "sandbox" / "examples" / "demo.yaml"
PLATFORM_EXAMPLE = ROOT / "blueprints" / "service-platform" / "examples" / "qa.yaml"


def blueprint_plan(
    blueprints_root: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        # Nothing listens on port 1: any database access would fail the command.
        DATABASE_URL="postgres://nobody@127.0.0.1:1/no_database",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        PORTAL_BLUEPRINTS_DIR=str(blueprints_root),
        DJANGO_SETTINGS_MODULE="portal.settings",
    )
    return subprocess.run(
        [sys.executable, "manage.py", "blueprint_plan", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_sandbox_example_plans_every_resource(blueprints_root) -> None:
    result = blueprint_plan(blueprints_root, "sandbox", "--config", str(SANDBOX_EXAMPLE))

    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(SANDBOX_EXAMPLE.read_text())
    services = [s["name"] for s in config["services"]]
    databases = [s["name"] for s in config["services"] if s.get("database")]
    expected = {
        "terraform_data.account",
        "terraform_data.network",
        "terraform_data.dns_zone",
        *(f'terraform_data.service["{name}"]' for name in services),
        *(f'terraform_data.database["{name}"]' for name in databases),
    }
    lines = result.stdout.splitlines()
    assert f"  {len(expected)} to add, 0 to change, 0 to replace, 0 to destroy" in lines
    listed = {line.split()[-1]: line.split()[1] for line in lines if "terraform_data." in line}
    assert listed == dict.fromkeys(expected, "create")
    assert "admin_token" in result.stdout  # named among the outputs, never its value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sandbox", "--config", "BAD"), "$.instance_size: 'huge' is not one of"),
        (("sandbox", "--config", "/nonexistent/config.yaml"), "--config: no such file"),
        (("no-such-blueprint", "--config", "BAD"), "unknown blueprint 'no-such-blueprint'"),
        (("tf-own-backend", "--config", "EMPTY"), "declares its own Terraform backend"),
    ],
    ids=["invalid-config", "missing-config-file", "unknown-blueprint", "own-backend-block"],
)
def test_bad_input_exits_2_saying_what_is_wrong(
    blueprints_root, tmp_path, args: tuple[str, ...], message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"instance_size": "huge"}))
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    files = {"BAD": str(bad), "EMPTY": str(empty)}

    stdout, stderr = io.StringIO(), io.StringIO()

    # In this process (quicker than a subprocess): exit codes come as SystemExit.
    with pytest.raises(SystemExit) as exited:
        call_command(
            "blueprint_plan", *(files.get(arg, arg) for arg in args), stdout=stdout, stderr=stderr
        )

    assert exited.value.code == 2, (stdout.getvalue(), stderr.getvalue())
    assert message in stderr.getvalue()
    assert stdout.getvalue() == ""


def test_service_platform_fails_with_terraforms_own_error_when_providers_are_unreachable(
    blueprints_root,
) -> None:
    """The aws provider cannot be downloaded offline: exit 1 and Terraform's own words.

    On a machine with registry access the provider installs, and the plan then fails for
    want of AWS credentials for the account the config pins: still exit 1, still
    Terraform's own error text.
    """
    result = blueprint_plan(
        blueprints_root, "service-platform", "--config", str(PLATFORM_EXAMPLE), timeout=180
    )

    assert result.returncode == 1, (result.stdout, result.stderr)
    first = result.stderr.splitlines()[0]
    if "cannot download" in first:
        # Offline: one line saying so and what to configure, then Terraform's own words.
        assert first.startswith("terraform failed: Terraform cannot download hashicorp/aws")
        assert "provider mirror" in first
    else:
        assert first.startswith("terraform failed: terraform ")
    assert "\nError: " in result.stderr  # Terraform's diagnostic, as Terraform printed it
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_providers_come_from_the_configured_cli_config(blueprints_root, tmp_path: Path) -> None:
    """PORTAL_TERRAFORM_CLI_CONFIG: Terraform installs providers as that file says (here an
    empty filesystem mirror, so the AWS provider is looked for there and nowhere else)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    cli_config = tmp_path / "terraform.tfrc"
    cli_config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/*/*"]\n  }\n}\n'
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "blueprint_plan", "service-platform",
         "--config", str(PLATFORM_EXAMPLE)],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": "postgres://nobody@127.0.0.1:1/no_database",
            "PORTAL_BLUEPRINTS_DIR": str(blueprints_root),
            "PORTAL_TERRAFORM_CLI_CONFIG": str(cli_config),
            "DJANGO_SETTINGS_MODULE": "portal.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "hashicorp/aws" in result.stderr and str(mirror) in result.stderr
