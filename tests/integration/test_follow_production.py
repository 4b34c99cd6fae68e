"""Clones that follow production: a production change queues an update run for each
follower, with production's values for the ``equal`` paths, under the follower's purpose
policy; the run page names the change; a follower that cannot follow stays flagged."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from accounts_app.models import Account, Purpose
from accounts_app.production import register_production
from pipelines import services as run_services
from pipelines.models import PipelineRun, RunStatus, Trigger
from tests.conftest import token_client
from tests.factories import AccountFactory, PipelineRunFactory, UserFactory
from tests.integration.test_account_updates import WAITING_OR_FINAL, explain, provisioned
from tests.integration.update_blueprints import VERSIONED_TEMPLATE, unique, write_blueprint

pytestmark = [pytest.mark.integration]


def follow_blueprint(root: Path, *, name: str, production: str, version: str = "1.0.0") -> None:
    write_blueprint(
        root,
        name=name,
        version=version,
        template=VERSIONED_TEMPLATE,
        parity={
            "production": production,
            "purposes": {"demo": {"equal": ["label"], "follow_production": True}},
        },
    )


def register(name: str, *, blueprint: str, config: dict[str, Any], tmp_path: Path) -> str:
    """account_register, as an operator runs it; its stderr."""
    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(config))
    err = io.StringIO()
    call_command(
        "account_register", "--name", name, "--blueprint", blueprint, "--config", str(path),
        stdout=io.StringIO(), stderr=err,
    )  # fmt: skip
    return err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_production_change_queues_follower_updates_under_their_policy(
    celery_worker: Any,
    wait_for_run: Any,
    blueprints_root: Path,
    tmp_path: Path,
    sally: Any,
    april: Any,
) -> None:
    name, prod = unique("fol"), unique("prod")
    follow_blueprint(blueprints_root, name=name, production=prod)
    register(prod, blueprint=name, config={"label": "v1", "size": "large"}, tmp_path=tmp_path)
    follower = provisioned(
        AccountFactory(
            name=unique("demo"), blueprint=name, owner=sally, purpose=Purpose.DEMO,
            config={"label": "v1", "size": "small"},
        ),
        wait_for_run,
    )  # fmt: skip
    other = provisioned(
        AccountFactory(
            name=unique("qa"), blueprint=name, owner=sally, purpose=Purpose.QA,
            config={"label": "v1"},
        ),
        wait_for_run,
    )  # fmt: skip

    # 1. Production's config changes: the follower gets an update with production's label.
    register(prod, blueprint=name, config={"label": "v2", "size": "large"}, tmp_path=tmp_path)
    run = PipelineRun.objects.filter(account=follower).latest("id")
    assert (run.kind, run.trigger, run.created_by) == ("update", Trigger.PRODUCTION, None)
    change = f"production {prod}: registration updated, config changed (label)"
    assert run.trigger_detail == change
    assert run.config == {"label": "v2", "size": "small"}  # only the equal path follows
    assert PipelineRun.objects.filter(account=other).count() == 1  # qa does not follow
    run = wait_for_run(run.pk, WAITING_OR_FINAL)
    # The follower's purpose policy: demo auto-approves admins, not its owner sally.
    assert run.status == RunStatus.WAITING_APPROVAL, explain(run)
    assert "auto-approves admins, not sally" in run.approval_reason
    web = Client()
    web.force_login(sally)
    page = web.get(f"/runs/{run.pk}/").content.decode()
    assert f"<strong>Production change:</strong> {change}" in page
    run_services.decide_stage(run.stages.get(kind="approve_plan"), user=april, approve=True)
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    follower.refresh_from_db()
    assert (follower.config["label"], follower.follow_problem) == ("v2", "")

    # 2. Its blueprint version raised; the update is rejected: the follower is flagged.
    follow_blueprint(blueprints_root, name=name, production=prod, version="1.1.0")
    register(prod, blueprint=name, config={"label": "v2", "size": "large"}, tmp_path=tmp_path)
    run = PipelineRun.objects.filter(account=follower).latest("id")
    assert (
        run.trigger_detail
        == f"production {prod}: registration updated, blueprint version 1.0.0 -> 1.1.0"
    )
    assert run.blueprint_version == "1.1.0"
    run = wait_for_run(run.pk, WAITING_OR_FINAL)
    assert run.status == RunStatus.WAITING_APPROVAL, explain(run)
    run_services.decide_stage(
        run.stages.get(kind="approve_plan"), user=april, approve=False, comment="not this week"
    )
    assert wait_for_run(run.pk).status == RunStatus.FAILED
    follower.refresh_from_db()
    assert follower.follow_problem.startswith(f"cannot follow production {prod}: registration")
    assert f"update run #{run.pk} failed" in follower.follow_problem
    assert "rejected by april: not this week" in follower.follow_problem
    assert "not following production" in web.get("/").content.decode()
    account_page = web.get(f"/accounts/{follower.pk}/").content.decode()
    assert 'id="follow-problem"' in account_page and "not this week" in account_page

    # 3. A retry that succeeds brings it level with production: the flag goes.
    retried = run_services.retry_stage(run.stages.get(kind="approve_plan"), user=april)
    run = wait_for_run(retried.run_id, WAITING_OR_FINAL)
    run_services.decide_stage(run.stages.get(kind="approve_plan"), user=april, approve=True)
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    follower.refresh_from_db()
    assert follower.follow_problem == ""


@pytest.mark.django_db
def test_a_follower_that_cannot_start_its_update_is_flagged_with_the_reason(
    blueprints_root: Path, sally: Any
) -> None:
    name, prod = unique("fol"), unique("prod")
    follow_blueprint(blueprints_root, name=name, production=prod)
    register_production(name=prod, blueprint=name, config={"label": "v1"})
    busy = AccountFactory(
        name=unique("busy"), blueprint=name, owner=sally, purpose=Purpose.DEMO,
        config={"label": "v1"}, status="ready",
    )  # fmt: skip
    holder = PipelineRunFactory(account=busy, kind="refresh-data", status=RunStatus.RUNNING)
    building = AccountFactory(
        name=unique("building"), blueprint=name, owner=sally, purpose=Purpose.DEMO,
        config={"label": "v1"}, status="provisioning",
    )  # fmt: skip
    provision = PipelineRunFactory(account=building, kind="provision", status=RunStatus.RUNNING)
    idle = AccountFactory(
        name=unique("idle"), blueprint=name, owner=sally, purpose=Purpose.DEMO,
        config={"label": "v2"}, status="ready",
    )  # fmt: skip

    register_production(name=prod, blueprint=name, config={"label": "v2"})

    busy.refresh_from_db()
    assert busy.follow_problem == (
        f"cannot follow production {prod}: registration updated, config changed (label): "
        f"account {busy.name} already has an active run: run #{holder.pk}"
    )
    assert list(PipelineRun.objects.filter(account=busy)) == [holder]
    # Still being built from production's old config: it cannot follow either.
    building.refresh_from_db()
    assert building.follow_problem.endswith(
        f"account {building.name} already has an active run: run #{provision.pk}"
    )
    # A follower with no run in the way gets its update (no worker runs it here).
    assert PipelineRun.objects.get(account=idle).trigger == Trigger.PRODUCTION
    assert Account.objects.get(pk=idle.pk).follow_problem == ""


@pytest.mark.django_db
def test_production_changed_from_the_api_or_the_admin_is_followed_too(
    blueprints_root: Path, sally: Any, adam: Any
) -> None:
    name, prod = unique("fol"), unique("prod")
    follow_blueprint(blueprints_root, name=name, production=prod)
    production, _ = register_production(name=prod, blueprint=name, config={"label": "v1"})
    follower = AccountFactory(
        name=unique("demo"), blueprint=name, owner=sally, purpose=Purpose.DEMO,
        config={"label": "v1"}, status="ready",
    )  # fmt: skip

    answer = token_client(adam).post(
        "/api/v1/accounts/",
        {"name": prod, "blueprint": name, "purpose": "production", "config": {"label": "v2"}},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    from_api = PipelineRun.objects.get(account=follower)
    assert (from_api.trigger, from_api.config["label"]) == (Trigger.PRODUCTION, "v2")
    from_api.status = RunStatus.FAILED  # out of the way for the next change
    from_api.save(update_fields=["status"])
    Account.objects.filter(pk=follower.pk).update(status="failed")

    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(staff)
    answer = admin.post(
        reverse("admin:accounts_app_account_change", args=[production.pk]),
        {
            "name": prod, "blueprint": name, "config": json.dumps({"label": "v3"}),
            "purpose": "production", "owner": production.owner_id, "cloud_account_id": "",
            "status": "ready",
        },
    )  # fmt: skip
    assert answer.status_code == 302, answer.content.decode()[:2000]
    from_admin = PipelineRun.objects.filter(account=follower).latest("id")
    assert from_admin.pk != from_api.pk
    assert (from_admin.trigger, from_admin.config["label"]) == (Trigger.PRODUCTION, "v3")
    assert "config changed (label)" in from_admin.trigger_detail
