"""The stage engine with a real Celery worker process, on the test database and broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines import engine, reaper, services
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


def test_killed_stage_is_taken_over_by_its_redelivered_message(celery_worker, wait_for_run) -> None:
    account = AccountFactory(blueprint="slow-hook", config={})
    run = services.start_run(account, "provision")
    hook_stage = run.stages.get(kind="pre_hooks")
    wait_until(
        lambda: LogLine.objects.filter(stage=hook_stage, text__contains="attempt 1 for").exists(),
        what="the slow hook to start",
    )
    hook_stage.refresh_from_db()
    assert hook_stage.status == StageStatus.RUNNING
    killed_worker = hook_stage.worker
    os.kill(int(killed_worker.rsplit(":", 1)[1]), signal.SIGKILL)

    # Acknowledged late and rejected on worker loss: the message comes back at once, finds
    # the process gone and starts attempt 2, with no reaper and no one clicking Retry.
    run = wait_for_run(run.pk, timeout=60)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    hook_stage.refresh_from_db()
    assert hook_stage.attempt == 2
    assert hook_stage.outputs["slow_hook"] == "done"
    texts = list(LogLine.objects.filter(stage=hook_stage).values_list("text", flat=True))
    assert f"--- worker lost: {killed_worker} is gone; taken over ---" in texts
    assert run.stages.get(kind="render").status == StageStatus.SUCCEEDED


def _running_stage(*, worker: str, heartbeat_age: float) -> StageRun:
    account = AccountFactory(blueprint="render-only", config={})
    run = PipelineRun.objects.create(account=account, kind="provision", status=RunStatus.RUNNING)
    beat = timezone.now() - timedelta(seconds=heartbeat_age)
    return StageRun.objects.create(
        run=run,
        position=1,
        kind="render",
        status=StageStatus.RUNNING,
        attempt=1,
        worker=worker,
        started_at=beat,
        heartbeat_at=beat,
    )


def _end_made_up_stages() -> None:
    # No worker runs them: end them so the teardown need not wait for them to stop.
    StageRun.objects.filter(status=StageStatus.RUNNING).update(status=StageStatus.FAILED)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_reaper_fails_a_stage_whose_worker_is_gone_and_spares_a_live_one(settings) -> None:
    settings.PORTAL_HEARTBEAT_STALE_SECONDS = 30
    host = socket.gethostname()
    gone = _running_stage(worker=f"{host}:{_dead_pid()}", heartbeat_age=31)
    # Late heartbeats, but the process still runs on this host: a retry would overlap it.
    alive = _running_stage(worker=f"{host}:{os.getppid()}", heartbeat_age=31)
    recent = _running_stage(worker=f"{host}:{_dead_pid()}", heartbeat_age=5)
    elsewhere = _running_stage(worker="another-host:1234", heartbeat_age=31)

    assert reaper.reap()["lost"] == 2

    statuses = {s.pk: s.status for s in StageRun.objects.all()}
    assert statuses[gone.pk] == statuses[elsewhere.pk] == StageStatus.FAILED
    assert statuses[alive.pk] == statuses[recent.pk] == StageStatus.RUNNING
    gone.refresh_from_db()
    assert gone.explanation == "worker lost"
    assert PipelineRun.objects.get(pk=gone.run_id).status == RunStatus.FAILED
    _end_made_up_stages()


def test_worker_loss_is_noticed_within_a_minute_by_default() -> None:
    # Worst case: the last beat just before the kill, then stale, then the next sweep.
    worst = (
        django_settings.PORTAL_HEARTBEAT_STALE_SECONDS
        + django_settings.CELERY_BEAT_SCHEDULE["reap-stale-stages"]["schedule"].total_seconds()
    )
    assert worst <= 60


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


def test_a_redelivered_message_takes_over_a_stage_only_from_a_lost_worker(settings) -> None:
    settings.PORTAL_HEARTBEAT_STALE_SECONDS = 30
    lost = _running_stage(worker="another-host:1234", heartbeat_age=31)
    lost.run.config = {"label": "hi"}
    lost.run.save()
    beating = _running_stage(worker="another-host:1234", heartbeat_age=5)

    engine.execute_stage(lost.pk)  # as the worker does when the message comes back
    engine.execute_stage(beating.pk)

    lost.refresh_from_db()
    assert (lost.status, lost.attempt) == (StageStatus.SUCCEEDED, 2)
    texts = list(LogLine.objects.filter(stage=lost).values_list("text", flat=True))
    assert "--- worker lost: another-host:1234 is gone; taken over ---" in texts
    beating.refresh_from_db()
    assert (beating.status, beating.attempt) == (StageStatus.RUNNING, 1)
    _end_made_up_stages()


def test_a_lost_attempts_live_child_holds_off_the_reaper_and_the_takeover(settings) -> None:
    """The worker is dead but the child it started (a Terraform saving its state) still
    runs: neither the reaper nor a redelivered message starts another attempt until the
    child's process group is gone."""
    settings.PORTAL_HEARTBEAT_STALE_SECONDS = 30
    settings.PORTAL_TERRAFORM_GRACE_SECONDS = 0.5  # how long a takeover waits for it
    child = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        stage = _running_stage(worker=f"{socket.gethostname()}:{_dead_pid()}", heartbeat_age=31)
        StageRun.objects.filter(pk=stage.pk).update(process_group=child.pid)

        assert reaper.reap()["lost"] == 0
        engine.execute_stage(stage.pk)  # waits out the grace, then leaves the stage alone
        stage.refresh_from_db()
        assert (stage.status, stage.attempt) == (StageStatus.RUNNING, 1)
    finally:
        child.kill()
        child.wait()

    assert reaper.reap()["lost"] == 1
    _end_made_up_stages()
