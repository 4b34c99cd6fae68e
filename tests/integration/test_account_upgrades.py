"""Blueprint upgrades: one account from its page (the diff first), then every account of
the blueprint at once, each update under its own purpose's policy. Real worker, real
Terraform (``terraform_data`` only)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

from accounts_app import parity
from accounts_app.models import DriftReport, Purpose
from accounts_app.production import register_production
from pipelines import services as run_services
from pipelines.models import PipelineRun, RunKind, RunStatus
from tests.conftest import token_client
from tests.factories import AccountFactory
from tests.integration.test_account_updates import WAITING_OR_FINAL, explain, provisioned
from tests.integration.update_blueprints import VERSIONED_TEMPLATE, unique, write_blueprint

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# demo: admins' updates are auto-approved; qa: nobody's are.
POLICY = {"demo": {"auto_approve": ["admins"]}, "qa": {"auto_approve": []}}


def test_upgrade_one_account_then_all_of_the_blueprint_each_under_its_policy(
    celery_worker: Any,
    wait_for_run: Any,
    blueprints_root: Path,
    sally: Any,
    april: Any,
    adam: Any,
) -> None:
    name = unique("upg")
    write_blueprint(blueprints_root, name=name, policy=POLICY, template=VERSIONED_TEMPLATE)
    first, second, third = (
        provisioned(
            AccountFactory(
                name=unique(prefix), blueprint=name, owner=sally, purpose=purpose,
                config={"label": prefix},
            ),
            wait_for_run,
        )
        for prefix, purpose in (("one", Purpose.DEMO), ("two", Purpose.DEMO), ("three", Purpose.QA))
    )  # fmt: skip
    production, _ = register_production(name=unique("prod"), blueprint=name, config={})
    web = Client()
    web.force_login(sally)
    page = web.get(f"/accounts/{first.pk}/").content.decode()
    assert "Upgrade to v" not in page  # at the blueprint's version

    write_blueprint(
        blueprints_root, name=name, version="1.1.0", policy=POLICY, template=VERSIONED_TEMPLATE
    )
    page = web.get(f"/accounts/{first.pk}/").content.decode()
    assert "Upgrade to v1.1.0" in page
    assert f'href="/blueprints/{name}/upgrade/"' not in page  # upgrading all is for admins

    # The upgrade's diff, nothing started: the same config rendered by the new version.
    diff = token_client(sally).get(f"/api/v1/accounts/{first.pk}/diff/").json()
    assert (diff["from_version"], diff["to_version"], diff["changed"]) == ("1.0.0", "1.1.0", True)
    assert '-    version = "1.0.0"' in diff["files"][0]["diff"]
    assert '+    version = "1.1.0"' in diff["files"][0]["diff"]
    review = web.get(f"/accounts/{first.pk}/upgrade/")
    assert review.status_code == 200
    assert 'class="diff-add">+    version = &quot;1.1.0&quot;' in review.content.decode()
    assert PipelineRun.objects.filter(account=first).count() == 1

    # Upgrade one: sally's demo update waits for an approver (demo auto-approves admins).
    started = web.post(f"/accounts/{first.pk}/upgrade/", {"reviewed": review.context["reviewed"]})
    run = PipelineRun.objects.filter(account=first).latest("id")
    assert started["Location"] == f"/runs/{run.pk}/"
    run = wait_for_run(run.pk, WAITING_OR_FINAL)
    assert run.status == RunStatus.WAITING_APPROVAL, explain(run)
    assert (run.kind, run.blueprint_version) == ("update", "1.1.0")
    run_services.decide_stage(run.stages.get(kind="approve_plan"), user=april, approve=True)
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    assert parity.built_version(first) == "1.1.0"
    assert "Upgrade to v" not in web.get(f"/accounts/{first.pk}/").content.decode()

    # Upgrade all: only admins; the two accounts left, each under its purpose's policy.
    assert token_client(sally).post(f"/api/v1/blueprints/{name}/upgrade/").status_code == 403
    admin_page = Client()
    admin_page.force_login(adam)
    listing = admin_page.get(f"/blueprints/{name}/upgrade/").content.decode()
    assert second.name in listing and third.name in listing and first.name not in listing
    assert production.name not in listing
    answer = token_client(adam).post(f"/api/v1/blueprints/{name}/upgrade/")
    assert answer.status_code == 200, answer.content
    results = {r["account"]: r for r in answer.json()["results"]}
    assert set(results) == {second.name, third.name}
    assert all(r["run"] and not r["problem"] for r in results.values())
    demo_run = wait_for_run(results[second.name]["run"])
    assert demo_run.status == RunStatus.SUCCEEDED, explain(demo_run)  # admins: auto-approved
    qa_run = wait_for_run(results[third.name]["run"], WAITING_OR_FINAL)
    assert qa_run.status == RunStatus.WAITING_APPROVAL, explain(qa_run)
    assert "auto-approves nobody, not adam" in qa_run.approval_reason
    assert not PipelineRun.objects.filter(account=production).exists()
    # Nothing left to start: upgraded, or being updated.
    assert token_client(adam).post(f"/api/v1/blueprints/{name}/upgrade/").json()["results"] == []


def test_a_drift_check_plans_the_terraform_last_applied_not_a_newer_blueprint(
    celery_worker: Any, wait_for_run: Any, blueprints_root: Path, sally: Any
) -> None:
    name = unique("drift-upg")
    write_blueprint(blueprints_root, name=name, template=VERSIONED_TEMPLATE)
    account = provisioned(
        AccountFactory(
            name=unique("dr"),
            blueprint=name,
            owner=sally,
            purpose=Purpose.QA,
            config={"label": "dr"},
        ),
        wait_for_run,
    )
    # A new version whose render differs (its version is in the input) and that asks for
    # a parameter the account's applied config lacks.
    folder = write_blueprint(
        blueprints_root, name=name, version="1.1.0", template=VERSIONED_TEMPLATE
    )
    spec = yaml.safe_load((folder / "blueprint.yaml").read_text())
    spec["parameters"]["properties"]["team"] = {"type": "string", "maxLength": 20}
    spec["parameters"]["required"] = ["team"]
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    check = wait_for_run(run_services.start_run(account, RunKind.DRIFT_CHECK).pk)
    assert check.status == RunStatus.SUCCEEDED, explain(check)
    assert check.blueprint_version == "1.0.0"
    report = DriftReport.objects.get(run=check)
    assert not report.drifted, report.summary
    render = check.stages.get(kind="render")
    log = "\n".join(render.log_lines.values_list("text", flat=True))
    assert f"the Terraform last applied ({name} 1.0.0): 1 files, not rendered again" in log
    assert render.outputs["applied"] is True and render.outputs["blueprint_version"] == "1.0.0"
    # Exactly the files the provision applied, digests and all.
    provision = PipelineRun.objects.get(account=account, kind=RunKind.PROVISION)
    assert render.outputs["manifest"] == provision.stages.get(kind="render").outputs["manifest"]


def test_account_upgrade_from_the_command_line_one_account_or_all_of_a_blueprint(
    celery_worker: Any, wait_for_run: Any, blueprints_root: Path, sally: Any, adam: Any
) -> None:
    name = unique("cli-upg")
    write_blueprint(blueprints_root, name=name, template=VERSIONED_TEMPLATE)
    one, two, three = (
        provisioned(
            AccountFactory(
                name=unique(prefix), blueprint=name, owner=sally, purpose=Purpose.QA,
                config={"label": prefix},
            ),
            wait_for_run,
        )
        for prefix in ("one", "two", "three")
    )  # fmt: skip

    def upgrade(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("account_upgrade", *args, "--poll", "0.2", stdout=out, stderr=err)
        except SystemExit as exited:
            return int(exited.code or 0), out.getvalue(), err.getvalue()
        return 0, out.getvalue(), err.getvalue()

    code, out, err = upgrade(one.name)
    assert code == 2 and "at its blueprint's version already" in err, err
    assert upgrade(one.name, "--all-of", name)[0] == 2  # one of the two, not both
    assert upgrade("--all-of", "no-such-blueprint")[0] == 2

    write_blueprint(blueprints_root, name=name, version="1.1.0", template=VERSIONED_TEMPLATE)
    # One account: its diff, then its run; asked by an admin, whom qa's policy auto-approves.
    code, out, err = upgrade(one.name, "--user", "adam", "--wait")
    [(account_name, run_id)] = [line.split() for line in out.splitlines()]
    assert code == 0, err
    assert account_name == one.name and '+    version = "1.1.0"' in err
    assert PipelineRun.objects.get(pk=int(run_id)).status == RunStatus.SUCCEEDED
    # The rest of the blueprint, each its own run; the one upgraded already is left alone.
    code, out, err = upgrade("--all-of", name, "--user", "adam", "--wait")
    assert code == 0, err
    started = dict(line.split() for line in out.splitlines())
    assert set(started) == {two.name, three.name}
    for account in (one, two, three):
        account.refresh_from_db()
        assert parity.built_version(account) == "1.1.0"
    code, out, err = upgrade("--all-of", name)
    assert (code, out) == (0, "") and f"no account of {name} is behind version 1.1.0" in err
