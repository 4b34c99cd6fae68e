"""The stage engine with a real Celery worker process, on the test database and broker."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import IntegrityError, transaction

from pipelines import engine, services
from pipelines.models import LogLine, PipelineRun, RunStatus, StageRun, StageStatus
from pipelines.tasks import run_stage
from tests.conftest import wait_until
from tests.factories import AccountFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_provision_run_renders_and_stores_files(celery_worker, wait_for_run) -> None:
    account = AccountFactory(blueprint="render-only", config={"label": 'say "hi"'})
    run = services.start_run(account, "provision")

    run = wait_for_run(run.pk)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    stage = run.stages.get()
    assert (stage.kind, stage.status, stage.attempt) == ("render", "succeeded", 1)
    assert stage.outputs["manifest"][0]["path"] == "main.tf"
    rendered = run.artifacts.get(name="terraform/main.tf")
    assert b'input = "say \\"hi\\""' in bytes(rendered.data)
    assert stage.outputs["manifest"][0]["sha256"] == rendered.sha256
    texts = list(LogLine.objects.filter(stage=stage).values_list("text", flat=True))
    assert any("main.tf" in text for text in texts)
    account.refresh_from_db()
    assert account.status == "ready"


def test_duplicate_delivery_runs_the_stage_once(celery_worker, wait_for_run) -> None:
    account = AccountFactory(blueprint="render-only", config={})
    run = services.start_run(account, "provision")
    stage = run.stages.get()
    # A second and third delivery of the same message, as a broker may do.
    duplicates = [run_stage.delay(stage.pk).id, run_stage.delay(stage.pk).id]

    wait_for_run(run.pk)
    # The duplicate deliveries reach the worker too (Celery logs each task it finishes).
    wait_until(
        lambda: all(
            f"run_stage[{task_id}] succeeded" in celery_worker.log_path.read_text()
            for task_id in duplicates
        ),
        timeout=30,
        what="the duplicate deliveries",
    )

    stage.refresh_from_db()
    assert (stage.status, stage.attempt) == (StageStatus.SUCCEEDED, 1)
    headers = LogLine.objects.filter(stage=stage, text__startswith="--- render, attempt")
    assert headers.count() == 1


def test_killed_stage_is_reaped_then_retried_to_success(
    celery_worker, wait_for_run, settings
) -> None:
    account = AccountFactory(blueprint="slow-hook", config={})
    run = services.start_run(account, "provision")
    hook_stage = run.stages.get(kind="pre_hooks")
    wait_until(
        lambda: LogLine.objects.filter(stage=hook_stage, text__contains="attempt 1 for").exists(),
        what="the slow hook to start",
    )
    hook_stage.refresh_from_db()
    assert hook_stage.status == StageStatus.RUNNING
    worker_pid = int(hook_stage.worker.rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)

    # No more heartbeats: once stale, the reaper fails the stage.
    settings.PORTAL_HEARTBEAT_STALE_SECONDS = 3
    wait_until(lambda: engine.reap()["lost"] == 1, timeout=30, what="the reaper")
    hook_stage.refresh_from_db()
    assert (hook_stage.status, hook_stage.explanation) == (StageStatus.FAILED, "worker lost")
    assert PipelineRun.objects.get(pk=run.pk).status == RunStatus.FAILED

    services.retry_stage(hook_stage)
    run = wait_for_run(run.pk)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    hook_stage.refresh_from_db()
    assert hook_stage.attempt == 2
    assert hook_stage.outputs["slow_hook"] == "done"
    assert run.stages.get(kind="render").status == StageStatus.SUCCEEDED


def test_second_active_run_is_refused_with_the_holder(celery_worker, wait_for_run) -> None:
    account = AccountFactory(blueprint="slow-hook", config={})
    first = services.start_run(account, "provision")

    with pytest.raises(services.RunConflict) as refused:
        services.start_run(account, "update")

    assert refused.value.holder_id == first.pk
    assert f"run #{first.pk}" in str(refused.value)
    # The database itself refuses a second active run, whatever the code path.
    with pytest.raises(IntegrityError), transaction.atomic():
        PipelineRun.objects.create(account=account, kind="update", status=RunStatus.RUNNING)
    services.cancel_run(first)
    assert wait_for_run(first.pk).status == RunStatus.CANCELLED
    assert not StageRun.objects.filter(run=first, status=StageStatus.RUNNING).exists()
