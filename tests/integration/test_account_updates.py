"""Editing an account's config with a diff first, then an update run under its policy:
through the API, the command line and the web pages, with a real Celery worker and real
Terraform (``terraform_data`` only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client

from accounts_app.models import Account, Purpose
from accounts_app.production import register_production
from pipelines import services as run_services
from pipelines.models import PipelineRun, RunKind, RunStatus, StageRun
from tests.conftest import run_command, token_client
from tests.factories import AccountFactory, UserFactory
from tests.integration.update_blueprints import unique, write_blueprint

pytestmark = [pytest.mark.integration]

WAITING_OR_FINAL = (
    RunStatus.WAITING_APPROVAL,
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)


def explain(run: PipelineRun) -> str:
    return f"{run.explanation}: " + str(
        [(s.kind, s.status, s.explanation) for s in run.stages.all()]
    )


def provisioned(account: Account, wait_for_run: Any) -> Account:
    run = wait_for_run(run_services.start_run(account, RunKind.PROVISION).pk)
    assert run.status == RunStatus.SUCCEEDED, explain(run)
    account.refresh_from_db()
    return account


@pytest.fixture
def blueprint(blueprints_root: Path) -> str:
    name = unique("edit")
    write_blueprint(blueprints_root, name=name)
    return name


@pytest.mark.django_db(transaction=True)
def test_an_api_edit_shows_the_diff_then_waits_for_an_approver_then_applies(
    celery_worker: Any, wait_for_run: Any, blueprint: str, sally: Any, april: Any
) -> None:
    account = provisioned(
        AccountFactory(
            name=unique("ed"), blueprint=blueprint, owner=sally, purpose=Purpose.QA,
            config={"label": "one"}, status="ready",
        ),
        wait_for_run,
    )  # fmt: skip
    client = token_client(sally)

    # The diff first, nothing started: the new render against the applied one.
    answer = client.get(
        f"/api/v1/accounts/{account.pk}/diff/", {"config": json.dumps({"label": "two"})}
    )
    assert answer.status_code == 200, answer.content
    diff = answer.json()
    assert diff["changed"] is True
    assert [(f["path"], f["change"]) for f in diff["files"]] == [("main.tf", "changed")]
    text = diff["files"][0]["diff"]
    assert '-    label = "one"' in text and '+    label = "two"' in text
    assert text.startswith("--- a/main.tf\n+++ b/main.tf\n")
    assert account.runs.count() == 1  # only the provision
    # The same from a request body.
    assert client.generic(
        "GET", f"/api/v1/accounts/{account.pk}/diff/", json.dumps({"config": {"label": "two"}}),
        content_type="application/json",
    ).json()["files"] == diff["files"]  # fmt: skip

    answer = client.patch(
        f"/api/v1/accounts/{account.pk}/", {"config": {"label": "two"}}, format="json"
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["diff"]["files"] == diff["files"]
    assert body["run"]["kind"] == "update"
    run = wait_for_run(body["run"]["id"], WAITING_OR_FINAL)
    # sally's qa edits are not auto-approved (qa auto-approves admins and approvers).
    assert run.status == RunStatus.WAITING_APPROVAL, explain(run)
    approval = StageRun.objects.get(run=run, kind="approve_plan")
    assert approval.outputs["approval_required"] is True
    assert "auto-approves admins, approvers, not sally" in approval.outputs["reason"]
    assert (approval.outputs["change"], approval.outputs["destroy"]) == (1, 0)
    account.refresh_from_db()
    assert account.config["label"] == "one"  # not before the update succeeds

    answer = token_client(april).post(
        f"/api/v1/runs/{run.pk}/stages/{approval.pk}/approve/", {"comment": "ok"}, format="json"
    )
    assert answer.status_code == 200, answer.content
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, explain(run)
    account.refresh_from_db()
    assert account.config == {"label": "two", "size": "small"}
    # Applied: the next diff is against the new render.
    again = client.get(
        f"/api/v1/accounts/{account.pk}/diff/", {"config": json.dumps({"label": "two"})}
    ).json()
    assert (again["changed"], again["base_run"]) == (False, run.pk)


@pytest.mark.django_db
def test_only_owners_and_admins_edit_and_production_only_admins(
    blueprint: str, sally: Any, april: Any, adam: Any
) -> None:
    account = AccountFactory(
        name=unique("own"), blueprint=blueprint, owner=sally, config={"label": "one"},
        status="ready",
    )  # fmt: skip
    other = UserFactory(username="rob", roles=["requesters"])
    body = {"config": {"label": "two"}}
    url = f"/api/v1/accounts/{account.pk}/"
    assert token_client(other).patch(url, body, format="json").status_code == 404
    assert token_client(april).patch(url, body, format="json").status_code == 403
    assert token_client(april).get(f"{url}diff/").status_code == 403
    assert token_client(other).get(f"{url}diff/").status_code == 404
    assert not PipelineRun.objects.exists()

    production, _ = register_production(name=unique("prod"), blueprint=blueprint, config={})
    url = f"/api/v1/accounts/{production.pk}/"
    assert token_client(sally).patch(url, body, format="json").status_code == 404
    assert token_client(april).patch(url, body, format="json").status_code == 403
    answer = token_client(adam).patch(url, body, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["run"] is None  # production is registered, never built
    production.refresh_from_db()
    assert production.config["label"] == "two"
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_an_edit_that_breaks_a_parity_rule_is_refused_naming_path_rule_and_value(
    blueprints_root: Path, sally: Any
) -> None:
    name, prod = unique("par"), unique("prod")
    write_blueprint(
        blueprints_root, name=name,
        parity={"production": prod, "purposes": {"qa": {"equal": ["size"]}}},
    )  # fmt: skip
    register_production(name=prod, blueprint=name, config={"size": "large"})
    account = AccountFactory(
        name=unique("qa"), blueprint=name, owner=sally, purpose=Purpose.QA,
        config={"label": "one", "size": "large"}, status="ready",
    )  # fmt: skip
    answer = token_client(sally).patch(
        f"/api/v1/accounts/{account.pk}/", {"config": {"size": "small"}}, format="json"
    )
    assert answer.status_code == 400
    [message] = answer.json()["config"]
    assert message.startswith("$.size: must equal production's value large")
    assert f"(parity rule for qa: equal [size], production {prod})" in message
    bad = token_client(sally).patch(
        f"/api/v1/accounts/{account.pk}/", {"config": {"size": "huge"}}, format="json"
    )
    assert bad.status_code == 400 and "$.size" in bad.json()["config"][0]
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_account_update_prints_the_diff_waits_and_exits_as_account_provision(
    celery_worker: Any, wait_for_run: Any, blueprint: str, tmp_path: Path, adam: Any
) -> None:
    account = provisioned(
        AccountFactory(name=unique("cli"), blueprint=blueprint, config={"label": "one"}),
        wait_for_run,
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"label": "cli", "size": "large"}))

    code, out, err = run_command(
        "account_update", account.name, "--config", str(config), "--user", "adam",
        "--wait", "--poll", "0.3",
    )  # fmt: skip
    assert code == 0, err
    *diff, run_id = out.splitlines()
    assert diff[:2] == ["--- a/main.tf", "+++ b/main.tf"]
    assert '-    label = "one"' in diff and '+    label = "cli"' in diff
    assert '+    size  = "large"' in diff
    run = PipelineRun.objects.get(pk=int(run_id))
    assert (run.kind, run.status, run.created_by) == ("update", "succeeded", adam)
    assert f"update run #{run.pk} started" in err and "apply" in err
    account.refresh_from_db()
    assert account.config == {"label": "cli", "size": "large"}

    # Bad input: every problem on its own line, exit 2, nothing started.
    config.write_text(yaml.safe_dump({"label": 42, "size": "huge"}))
    code, out, err = run_command("account_update", account.name, "--config", str(config))
    assert code == 2
    assert err.splitlines() == [
        "$.label: 42 is not of type 'string'",
        "$.size: 'huge' is not one of ['small', 'large']",
    ]
    code, _, err = run_command("account_update", "nobody-here", "--config", str(config))
    assert (code, err.strip()) == (2, "no account named 'nobody-here'")
    assert account.runs.count() == 2

    # Rejected by an approver: the run fails, exit 1. The system user's edit needs one.
    config.write_text(yaml.safe_dump({"label": "rejected"}))
    code, out, err = run_command(
        "account_update", account.name, "--config", str(config), "--wait", "--poll", "0.3",
        "--user", "nobody",
    )  # fmt: skip
    assert (code, err.strip()) == (2, "--user: no user named 'nobody'")
    code, out, _ = run_command("account_update", account.name, "--config", str(config))
    assert code == 0
    run = wait_for_run(int(out.splitlines()[-1]), WAITING_OR_FINAL)
    assert run.status == RunStatus.WAITING_APPROVAL, explain(run)
    run_services.decide_stage(
        run.stages.get(kind="approve_plan"), user=adam, approve=False, comment="no"
    )
    assert wait_for_run(run.pk).status == RunStatus.FAILED
    account.refresh_from_db()
    assert account.config["label"] == "cli"  # a failed update changes nothing


@pytest.mark.django_db
def test_the_web_edit_form_is_prefilled_shows_the_diff_and_starts_only_what_was_reviewed(
    blueprint: str, sally: Any
) -> None:
    account = AccountFactory(
        name=unique("web"), blueprint=blueprint, owner=sally, config={"label": "one"},
        status="ready",
    )  # fmt: skip
    web = Client()
    web.force_login(sally)
    page = web.get(f"/accounts/{account.pk}/").content.decode()
    assert f'href="/accounts/{account.pk}/edit/"' in page
    form = web.get(f"/accounts/{account.pk}/edit/").content.decode()
    assert 'name="c.label" value="one"' in form
    assert "Start update" not in form  # the diff comes first

    review = web.post(f"/accounts/{account.pk}/edit/", {"c.label": "two", "c.size": "small"})
    assert review.status_code == 200
    text = review.content.decode()
    assert 'class="diff-add">+    label = &quot;two&quot;' in text
    assert "Start update" in text
    reviewed = review.context["reviewed"]

    # A change after the review is shown again, not started.
    stale = web.post(
        f"/accounts/{account.pk}/edit/",
        {"c.label": "three", "c.size": "small", "start": "1", "reviewed": reviewed},
    )
    assert stale.status_code == 409 and not PipelineRun.objects.exists()
    started = web.post(
        f"/accounts/{account.pk}/edit/",
        {"c.label": "two", "c.size": "small", "start": "1", "reviewed": reviewed},
    )
    run = PipelineRun.objects.get()
    assert started.status_code == 302 and started["Location"] == f"/runs/{run.pk}/"
    assert (run.kind, run.config, run.created_by) == (
        "update",
        {"label": "two", "size": "small"},
        sally,
    )

    bad = web.post(f"/accounts/{account.pk}/edit/", {"c.label": "x" * 41, "c.size": "small"})
    assert bad.status_code == 400
    other = UserFactory(username="rob", roles=["requesters"])
    web.force_login(other)
    assert web.get(f"/accounts/{account.pk}/edit/").status_code == 404


@pytest.mark.django_db
def test_an_edit_cannot_rename_the_account(sally: Any) -> None:
    account = AccountFactory(name=unique("named"), owner=sally, status="ready")  # sandbox
    config = {**account.config, "account_name": "someone-else"}
    answer = token_client(sally).patch(
        f"/api/v1/accounts/{account.pk}/", {"config": config}, format="json"
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "config": [
            f"$.account_name: must be the account's name {account.name!r} or left out: an "
            "account's name is the one source of its name"
        ]
    }
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_an_edit_under_a_warn_rule_is_accepted_and_its_warning_goes_to_the_approver(
    blueprints_root: Path, adam: Any
) -> None:
    name, prod = unique("warn"), unique("prod")
    write_blueprint(
        blueprints_root, name=name,
        parity={"production": prod, "purposes": {"demo": {"equal": ["size"], "enforce": "warn"}}},
    )  # fmt: skip
    register_production(name=prod, blueprint=name, config={"size": "large"})
    account = AccountFactory(
        name=unique("demo"), blueprint=name, owner=adam, purpose=Purpose.DEMO,
        config={"size": "large"}, status="ready",
    )  # fmt: skip
    answer = token_client(adam).patch(
        f"/api/v1/accounts/{account.pk}/", {"config": {"size": "small"}}, format="json"
    )
    assert answer.status_code == 201, answer.content
    [warning] = answer.json()["diff"]["parity_warnings"]
    assert warning.startswith("size: must equal production's value large")
    run = PipelineRun.objects.get(pk=answer.json()["run"]["id"])
    # adam is auto-approved for demo, but the warning still goes to an approver.
    assert run.approval_reason == f"parity warnings: {warning}"
