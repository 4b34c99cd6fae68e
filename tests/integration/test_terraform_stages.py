"""Stages plan, approve_plan and apply with real Terraform (bundled) and a real Celery worker.

State lives in the test database through Terraform's `pg` backend, one schema per
account, exactly as in production; accounts get unique names so that a reused test
database never hands a test somebody else's state.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from accounts_app.records import AccountRecords
from pipelines import services
from pipelines.artifacts import DbArtifactStore
from pipelines.blueprints import load_blueprint
from pipelines.clients.terraform import PgBackend, TerraformClient
from pipelines.models import LogLine, PipelineRun, RunStatus, StageRun, StageStatus
from pipelines.stages import plan as plan_stage
from pipelines.stages.base import AccountInfo, StageContext, StageError
from pipelines.stages.terraform_support import (
    backend_for,
    pg_conn_str,
    register_account_secrets,
    sensitive_values,
    state_schema,
)
from tests.conftest import wait_until
from tests.factories import AccountFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SANDBOX_STAGES = ["pre_hooks", "render", "plan", "approve_plan", "apply", "post_hooks"]
FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _stage(run: PipelineRun, kind: str) -> StageRun:
    return StageRun.objects.get(run=run, kind=kind)


def _outputs(run: PipelineRun, kind: str) -> dict:
    return _stage(run, kind).outputs


def _log_texts(*runs: PipelineRun) -> list[str]:
    return list(
        LogLine.objects.filter(stage__run__in=runs)
        .order_by("stage", "number")
        .values_list("text", flat=True)
    )


def _stage_log(run: PipelineRun, kind: str) -> str:
    return "\n".join(
        LogLine.objects.filter(stage__run=run, stage__kind=kind).values_list("text", flat=True)
    )


def _explain(run: PipelineRun) -> str:
    return f"{run.explanation}: " + str(
        [(s.kind, s.status, s.explanation) for s in run.stages.all()]
    )


def test_sandbox_provision_update_replace_reject_then_approve(
    celery_worker, wait_for_run, settings
) -> None:
    name = _unique("sbx")
    # The shipped sandbox's Terraform without its database stages (no production data here).
    account = AccountFactory(name=name, blueprint="sandbox-infra")
    approver = UserFactory(username=_unique("approver"))
    config = account.config
    databases = [s["name"] for s in config["services"] if s.get("database")]

    # 1. First provision: creates only, so on_destroy needs no human.
    first = wait_for_run(services.start_run(account, "provision").pk, timeout=120)
    assert first.status == RunStatus.SUCCEEDED, _explain(first)
    assert [(s.kind, s.status) for s in first.stages.all()] == [
        (kind, StageStatus.SUCCEEDED) for kind in SANDBOX_STAGES
    ]
    plan = _outputs(first, "plan")
    # account + network + dns zone, one per service, one per database.
    assert plan["add"] == 3 + len(config["services"]) + len(databases)
    assert (plan["change"], plan["replace"], plan["destroy"]) == (0, 0, 0)
    planned = {r["address"]: r["action"] for r in plan["resources"]}
    assert planned[f'terraform_data.database["{databases[0]}"]'] == "create"
    assert planned["terraform_data.network"] == "create"
    stored_plan = first.artifacts.get(name=plan["plan_artifact"])
    assert stored_plan.sha256 == plan["plan_sha256"]
    assert hashlib.sha256(bytes(stored_plan.data)).hexdigest() == plan["plan_sha256"]
    assert plan["backend"] == {"type": "pg", "schema": state_schema(name)}
    approval = _outputs(first, "approve_plan")
    assert approval["approval_required"] is False
    assert "on_destroy" in approval["reason"]
    applied = _outputs(first, "apply")
    assert applied["applied_plan_sha256"] == plan["plan_sha256"]
    assert applied["sensitive_outputs"] == ["admin_token"]
    assert "vpc_cidr" in applied["outputs"]
    # Any worker, any machine: apply laid the files out again in its own directory.
    assert plan["workdir"] != applied["workdir"]
    assert f"in {plan['workdir']}" in _stage_log(first, "plan")
    assert f"in {applied['workdir']}" in _stage_log(first, "apply")
    # Terraform's own output streamed into the stage logs.
    assert f"Plan: {plan['add']} to add, 0 to change, 0 to destroy." in _stage_log(first, "plan")
    assert "Apply complete!" in _stage_log(first, "apply")

    account.refresh_from_db()
    assert account.status == "ready"
    assert account.outputs["vpc_cidr"] == {
        "value": config["cidr"],
        "sensitive": False,
        "type": "string",
    }
    assert account.outputs["dns_zone"]["value"] == config["dns_zone"]
    token = hashlib.sha256(f"{name}:admin".encode()).hexdigest()  # as outputs.tf derives it
    assert account.outputs["admin_token"] == {"value": token, "sensitive": True, "type": "string"}

    # 2. The same config again: nothing to do, nothing to approve.
    second = wait_for_run(services.start_run(account, "update").pk, timeout=120)
    assert second.status == RunStatus.SUCCEEDED, _explain(second)
    plan = _outputs(second, "plan")
    assert (plan["add"], plan["change"], plan["replace"], plan["destroy"]) == (0, 0, 0, 0)
    assert plan["has_changes"] is False
    assert plan["resources"] == []
    assert plan["unchanged"] == 3 + len(config["services"]) + len(databases)
    assert _outputs(second, "approve_plan")["approval_required"] is False

    # 3. A bigger instance size replaces the databases: a human must approve. Rejected.
    account.config = {**config, "instance_size": "medium"}
    account.save()
    third = wait_for_run(
        services.start_run(account, "update").pk, (RunStatus.WAITING_APPROVAL, *FINAL)
    )
    assert third.status == RunStatus.WAITING_APPROVAL, _explain(third)
    waiting = _stage(third, "approve_plan")
    assert waiting.status == StageStatus.WAITING_APPROVAL
    assert waiting.outputs["approval_required"] is True
    assert waiting.outputs["replace"] == len(databases)
    assert waiting.outputs["change"] == len(config["services"])  # size is in each service
    assert {"address": f'terraform_data.database["{databases[0]}"]', "action": "replace"} in (
        waiting.outputs["resources"]
    )
    assert waiting.outputs["plan_sha256"] == _outputs(third, "plan")["plan_sha256"]
    assert abs((waiting.approval_deadline - timezone.now()).total_seconds() - 72 * 3600) < 600
    assert _stage(third, "apply").status == StageStatus.PENDING

    services.decide_stage(waiting, user=approver, approve=False, comment="not during the demo")
    third = wait_for_run(third.pk)
    assert third.status == RunStatus.FAILED
    assert "not during the demo" in third.explanation
    waiting.refresh_from_db()
    assert waiting.status == StageStatus.FAILED
    assert "not during the demo" in waiting.explanation
    assert (waiting.decided_by, waiting.decision_comment) == (approver, "not during the demo")
    assert _stage(third, "apply").status == StageStatus.SKIPPED  # never applied

    # 4. Asked again and approved: the replace is applied.
    fourth = wait_for_run(
        services.start_run(account, "update").pk, (RunStatus.WAITING_APPROVAL, *FINAL)
    )
    assert fourth.status == RunStatus.WAITING_APPROVAL, _explain(fourth)
    plan = _outputs(fourth, "plan")
    assert plan["replace"] == len(databases)  # the rejected plan changed nothing
    services.decide_stage(_stage(fourth, "approve_plan"), user=approver, approve=True)
    fourth = wait_for_run(fourth.pk, timeout=120)
    assert fourth.status == RunStatus.SUCCEEDED, _explain(fourth)
    assert _outputs(fourth, "apply")["applied_plan_sha256"] == plan["plan_sha256"]
    replaced, updated = len(databases), len(config["services"])
    assert (
        f"Apply complete! Resources: {replaced} added, {updated} changed, {replaced} destroyed."
    ) in _stage_log(fourth, "apply")

    # The sensitive output is stored on the account, and nowhere a person could read it.
    runs = (first, second, third, fourth)
    assert not [text for text in _log_texts(*runs) if token in text]
    for stage in StageRun.objects.filter(run__in=runs):
        assert token not in json.dumps(stage.outputs), stage.kind
        assert token not in stage.error + stage.explanation, stage.kind
    account.refresh_from_db()
    assert account.outputs["admin_token"]["value"] == token


def _change_state_out_of_band(run: PipelineRun, account_name: str, where: Path) -> None:
    """Apply the run's own files with the account's backend, as another operator might."""
    DbArtifactStore(run.pk).lay_out(prefix="terraform/", directory=where)
    client = TerraformClient(workdir=where, backend=backend_for(account_name))
    client.init()
    client.plan(where / "oob.bin")
    client.apply(where / "oob.bin")


def test_stale_plan_is_refused_and_a_retry_plans_and_asks_again(
    celery_worker, wait_for_run, tmp_path
) -> None:
    name = _unique("stale")
    account = AccountFactory(name=name, blueprint="tf-always", config={"generation": "1"})
    approver = UserFactory(username=_unique("approver"))
    run = wait_for_run(
        services.start_run(account, "provision").pk, (RunStatus.WAITING_APPROVAL, *FINAL)
    )
    assert run.status == RunStatus.WAITING_APPROVAL, _explain(run)
    first_plan = _outputs(run, "plan")
    assert first_plan["add"] == 1

    # While the plan waits for a human, the state moves on.
    _change_state_out_of_band(run, name, tmp_path / "oob")
    services.decide_stage(_stage(run, "approve_plan"), user=approver, approve=True, comment="ok")
    run = wait_for_run(run.pk, timeout=90)

    assert run.status == RunStatus.FAILED
    apply = _stage(run, "apply")
    assert apply.status == StageStatus.FAILED
    assert "stale" in apply.explanation
    assert "plan again" in apply.explanation
    assert (apply.retryable, apply.retry_from) == (True, "plan")
    assert "Saved plan is stale" in _stage_log(run, "apply")  # Terraform's own words

    # The retry starts again from the plan, which goes through approval again.
    services.retry_stage(apply)
    run = wait_for_run(run.pk, (RunStatus.WAITING_APPROVAL, *FINAL), timeout=90)
    assert run.status == RunStatus.WAITING_APPROVAL, _explain(run)
    replanned = _stage(run, "plan")
    assert replanned.attempt == 2
    second_plan = replanned.outputs
    assert second_plan["plan_sha256"] != first_plan["plan_sha256"]
    assert second_plan["has_changes"] is False  # the out-of-band apply did the work
    approval = _stage(run, "approve_plan")
    assert (approval.attempt, approval.status) == (2, StageStatus.WAITING_APPROVAL)
    assert approval.outputs["plan_sha256"] == second_plan["plan_sha256"]

    services.decide_stage(approval, user=approver, approve=True)
    run = wait_for_run(run.pk, timeout=90)
    assert run.status == RunStatus.SUCCEEDED, _explain(run)
    apply.refresh_from_db()
    assert apply.attempt == 2
    assert apply.outputs["applied_plan_sha256"] == second_plan["plan_sha256"]
    account.refresh_from_db()
    assert account.outputs["app"]["value"] == "1"
    assert account.outputs["token"]["sensitive"] is True
    token = account.outputs["token"]["value"]
    assert not [text for text in _log_texts(run) if token in text]


def test_cancel_during_apply_leaves_state_usable(celery_worker, wait_for_run) -> None:
    account = AccountFactory(
        name=_unique("cancel"), blueprint="tf-slow-apply", config={"sleep_seconds": 120}
    )
    run = services.start_run(account, "provision")
    apply = _stage(run, "apply")
    wait_until(
        lambda: LogLine.objects.filter(stage=apply, text__contains="Executing:").exists(),
        timeout=90,
        what="the apply's local-exec sleep to start",
    )
    asked = time.monotonic()
    services.cancel_run(run)
    run = wait_for_run(run.pk, timeout=60)
    waited = time.monotonic() - asked

    assert run.status == RunStatus.CANCELLED, _explain(run)
    assert waited < 30  # not the 120 s sleep: Terraform was interrupted
    apply.refresh_from_db()
    assert apply.status == StageStatus.CANCELLED
    assert "cancelled" in apply.explanation
    log = _stage_log(run, "apply")
    assert "Interrupt received" in log or "Gracefully shutting down" in log
    assert "stopped gracefully" in log

    # The state is usable: the next run plans and applies from it.
    account.config = {"sleep_seconds": 1}
    account.save()
    after = wait_for_run(services.start_run(account, "update").pk, timeout=120)
    assert after.status == RunStatus.SUCCEEDED, _explain(after)
    plan = _outputs(after, "plan")
    assert {r["address"] for r in plan["resources"]} == {"terraform_data.slow"}
    account.refresh_from_db()
    assert account.outputs["slept"]["value"] == 1


def test_a_blueprint_that_declares_its_own_backend_is_refused(celery_worker, wait_for_run) -> None:
    account = AccountFactory(name=_unique("ownbe"), blueprint="tf-own-backend", config={})
    run = wait_for_run(services.start_run(account, "provision").pk, timeout=60)

    assert run.status == RunStatus.FAILED
    plan = _stage(run, "plan")
    assert "declares its own Terraform backend" in plan.explanation
    assert "main.tf line 2" in plan.explanation
    assert plan.retryable is False


def test_a_locked_state_is_a_retryable_error_naming_the_lock_holder(
    celery_worker, wait_for_run, settings, tmp_path
) -> None:
    name = _unique("locked")
    account = AccountFactory(name=name, blueprint="tf-slow-apply", config={"sleep_seconds": 0})
    run = wait_for_run(services.start_run(account, "provision").pk, timeout=90)
    assert run.status == RunStatus.SUCCEEDED, _explain(run)
    schema = state_schema(name)
    settings.PORTAL_TERRAFORM_LOCK_TIMEOUT = "0s"  # this process only: fail at once

    # Another session holds the state's advisory lock, as a running Terraform would.
    conninfo = pg_conn_str(settings.DATABASES["default"])
    with psycopg.connect(conninfo, application_name="other-terraform", autocommit=True) as holder:
        holder.execute(f"SELECT pg_advisory_lock(id) FROM {schema}.states WHERE name = 'default'")
        pid = holder.info.backend_pid
        with pytest.raises(StageError) as locked:
            plan_stage.execute(_direct_context(account, run, tmp_path / "locked"))

    assert locked.value.retryable is True
    assert "locked by another operation" in locked.value.explanation
    assert f"held by PostgreSQL session pid {pid} (application 'other-terraform'" in (
        locked.value.explanation
    )
    assert "Error acquiring the state lock" in locked.value.detail
    # Released: the same stage succeeds.
    outputs = plan_stage.execute(_direct_context(account, run, tmp_path / "free"))
    assert outputs["has_changes"] is False


def _direct_context(account, run: PipelineRun, workdir: Path) -> StageContext:
    workdir.mkdir(parents=True)
    return StageContext(
        account=AccountInfo(
            pk=account.pk,
            name=account.name,
            purpose=account.purpose,
            cloud_account_id="",
            config=account.config,
            outputs={},
        ),
        run_id=run.pk,
        run_kind="update",
        stage_id=0,
        stage_kind="plan",
        attempt=1,
        blueprint=load_blueprint(account.blueprint),
        config=account.config,
        previous={},
        workdir=workdir,
        log=lambda _: None,
        add_secret=lambda _: None,
        is_cancelled=lambda: False,
        artifacts=DbArtifactStore(run.pk),
        records=AccountRecords(account.pk),
    )


# --- Where state lives (no worker needed) ---------------------------------------------


def test_state_goes_to_the_portal_database_one_schema_per_account(settings) -> None:
    backend = backend_for("qa-team-7")
    assert isinstance(backend, PgBackend)
    assert backend.schema_name == "tfstate_qa_team_7"
    assert backend.conn_str == pg_conn_str(settings.DATABASES["default"])


def test_conn_str_quotes_credentials_and_keeps_tls_for_remote_servers() -> None:
    remote = pg_conn_str(
        {"NAME": "portal", "USER": "app", "PASSWORD": "p@ss:w/rd", "HOST": "db.internal"}
    )
    assert remote == "postgres://app:p%40ss%3Aw%2Frd@db.internal:5432/portal?sslmode=require"
    local = pg_conn_str({"NAME": "portal", "USER": "app", "HOST": "", "PORT": 5433})
    assert local == "postgres://app@127.0.0.1:5433/portal?sslmode=disable"
    chosen = pg_conn_str(
        {"NAME": "portal", "USER": "app", "HOST": "db", "OPTIONS": {"sslmode": "verify-full"}}
    )
    assert chosen.endswith("?sslmode=verify-full")


def test_sensitive_values_are_found_wherever_the_plan_marks_them() -> None:
    plan_json = {
        "output_changes": {
            "token": {
                "before": "old-token",
                "after": "new-token",
                "after_sensitive": True,
                "before_sensitive": True,
            },
            "public": {"before": None, "after": "visible", "after_sensitive": False},
        },
        "resource_changes": [
            {
                "address": "terraform_data.db",
                "change": {
                    "after": {"input": {"host": "db.internal", "password": "pw-in-input"}},
                    "after_sensitive": {"input": {"password": True}},
                },
            }
        ],
        "prior_state": {
            "values": {"outputs": {"old": {"sensitive": True, "value": {"k": "nested-secret"}}}}
        },
    }

    found = sensitive_values(plan_json)

    assert "new-token" in found and "old-token" in found and "pw-in-input" in found
    assert {"k": "nested-secret"} in found
    assert "visible" not in found and "db.internal" not in found


def test_a_sensitive_value_is_registered_in_string_and_json_forms() -> None:
    added: list[str] = []
    ctx = StageContext(
        account=AccountInfo(
            pk=1,
            name="a",
            purpose="qa",
            cloud_account_id="",
            config={},
            outputs={
                "token": {
                    "value": {"user": "admin", "password": "s3cr3t-pw"},
                    "sensitive": True,
                    "type": "object",
                },
                "public": {"value": "shown-value", "sensitive": False, "type": "string"},
            },
        ),
        run_id=1,
        run_kind="update",
        stage_id=1,
        stage_kind="plan",
        attempt=1,
        blueprint=load_blueprint("tf-always"),
        config={},
        previous={},
        workdir=Path("/nonexistent"),
        log=lambda _: None,
        add_secret=added.append,
        is_cancelled=lambda: False,
        artifacts=DbArtifactStore(0),
        records=AccountRecords(1),  # never called: registering secrets reads no account row
    )

    register_account_secrets(ctx)

    assert "s3cr3t-pw" in added  # a leaf on its own
    assert '{"password": "s3cr3t-pw", "user": "admin"}' in added  # JSON, as `output -json`
    assert '{"password":"s3cr3t-pw","user":"admin"}' in added
    assert not [value for value in added if "shown-value" in value]
