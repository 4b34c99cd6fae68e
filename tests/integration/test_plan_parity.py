"""Parity at plan: the clone's planned resources against production's, before apply."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from accounts_app.models import AccountStatus, Purpose
from pipelines import services
from pipelines.models import RunStatus, StageRun, StageStatus
from pipelines.stages.base import StageError
from pipelines.stages.plan_parity import check_plan
from tests.factories import AccountFactory
from tests.integration.stage_context import stage_context
from tests.integration.test_parity_report import PROD_CONFIG, resources

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def production(*, found: list[dict]) -> None:
    AccountFactory(
        name="prod",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
        config=PROD_CONFIG,
        resources=found,
    )


def test_a_loadtest_on_a_smaller_database_class_fails_its_plan_naming_both_values(
    celery_worker, wait_for_run
) -> None:
    production(found=resources())
    name = f"lt-{uuid.uuid4().hex[:8]}"
    config = {**PROD_CONFIG, "instance_size": "small"}
    account = AccountFactory(name=name, purpose=Purpose.LOADTEST, config=config)
    run = wait_for_run(services.start_run(account, "provision").pk, timeout=180)
    assert run.status == RunStatus.FAILED
    plan = StageRun.objects.get(run=run, kind="plan")
    assert plan.status == StageStatus.FAILED
    assert plan.explanation == (
        "not in parity with production prod: "
        'resource terraform_data.database["orders"].input.instance_class is db.t4g.micro, '
        "production's is db.r6g.large"
    )
    assert StageRun.objects.get(run=run, kind="apply").status != StageStatus.SUCCEEDED
    account.refresh_from_db()
    assert account.resources == []  # nothing was applied


def planned(*addresses: tuple[str, str]) -> dict[str, Any]:
    """A `show -json` plan with these (address, type) resources, all declared."""
    return {
        "planned_values": {
            "root_module": {
                "resources": [
                    {"address": a, "mode": "managed", "type": t, "values": {}} for a, t in addresses
                ]
            }
        },
        "configuration": {
            "root_module": {
                "resources": [{"address": "terraform_data.database", "mode": "managed"}]
            }
        },
    }


@pytest.fixture
def qa_rules(tmp_path: Path, settings: Any, blueprints_root: Path):
    """The sandbox with its qa rules replaced by the given ones."""

    def write(rules: dict[str, Any]) -> None:
        folder = tmp_path / "sandbox"
        if not folder.exists():
            shutil.copytree(blueprints_root / "sandbox", folder)
        spec = yaml.safe_load((folder / "blueprint.yaml").read_text())
        spec["parity"]["purposes"]["qa"] = rules
        (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))
        settings.PORTAL_BLUEPRINTS_DIR = tmp_path

    return write


def context(account: Any, lines: list[str]):
    return stage_context(account=account, run_id=1, kind="plan", previous={}, log=lines.append)


def test_a_missing_resource_type_is_named(qa_rules) -> None:
    qa_rules({"resources": "types"})
    production(found=[*resources(), {"address": "aws_route53_zone.private",
                                      "type": "aws_route53_zone", "values": {}}])  # fmt: skip
    account = AccountFactory(purpose=Purpose.QA)
    lines: list[str] = []
    with pytest.raises(StageError) as error:
        check_plan(
            ctx=context(account, lines), plan=planned(("terraform_data.x", "terraform_data"))
        )
    assert error.value.explanation == (
        "not in parity with production prod: resource aws_route53_zone is missing "
        "(production has it)"
    )
    assert error.value.retryable is False
    assert "parity: equal resource terraform_data: clone=present production=present" in lines


def test_under_warn_the_plan_passes_with_the_result_in_its_outputs(qa_rules) -> None:
    qa_rules({"resources": "addresses", "enforce": "warn"})
    production(found=resources())
    account = AccountFactory(purpose=Purpose.QA)
    outputs = check_plan(
        ctx=context(account, []), plan=planned(("terraform_data.network", "terraform_data"))
    )
    assert outputs is not None
    assert (outputs["checked"], outputs["in_parity"], outputs["enforce"]) == (True, False, "warn")
    missing = {c["path"] for c in outputs["checks"] if c["status"] == "differs"}
    assert missing == {
        "resource terraform_data.account",
        'resource terraform_data.database["orders"]',
        "resource terraform_data.dns_zone",
    }


def test_a_rule_on_a_resource_the_terraform_does_not_declare_is_an_error(qa_rules) -> None:
    qa_rules({"resource_attributes": {"terraform_data.cache": ["input.size"]}})
    account = AccountFactory(purpose=Purpose.QA)
    with pytest.raises(StageError, match="names terraform_data.cache, which its Terraform does"):
        check_plan(ctx=context(account, []), plan=planned())


def test_no_rules_or_no_production_means_no_check(qa_rules) -> None:
    qa_rules({"equal": ["dns_zone"]})
    account = AccountFactory(purpose=Purpose.QA)
    assert check_plan(ctx=context(account, []), plan=planned()) is None
    qa_rules({"resources": "addresses"})
    lines: list[str] = []
    outputs = check_plan(ctx=context(account, lines), plan=planned())
    assert outputs == {"production": "prod", "checked": False, "checks": []}
    assert "parity: production account prod is not registered; skipped" in lines
