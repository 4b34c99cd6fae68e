"""The engine under faults, with real processes: a broker outage, database connections
killed mid-stage, a graceful restart, and parallel retries, approvals and cancels."""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from accounts_app import notifications
from accounts_app.models import AccountStatus
from accounts_app.tasks import notify
from pipelines import engine, services
from pipelines.models import (
    LogLine,
    OutboxMessage,
    PipelineRun,
    RunStatus,
    StageRun,
    StageStatus,
)
from portal.celery import app
from tests.conftest import WorkerProcess, token_client, wait_until
from tests.factories import AccountFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

API = "/api/v1/"


def logged(stage: StageRun, text: str) -> bool:
    return LogLine.objects.filter(stage=stage, text__contains=text).exists()


# --- a broker of our own, to stop and start -----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server on a free loopback port (never the shared one on 6379)."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, what="redis to start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def point_app_at(broker_url: str, settings: Any) -> None:
    """This process's Celery app sends to ``broker_url`` from now on."""
    settings.CELERY_BROKER_URL = broker_url
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = broker_url
    app.close()  # drops the connection pool
    app.amqp._producer_pool = None


@pytest.fixture
def outage_broker(
    celery_worker: WorkerProcess, worker_env: dict[str, str], tmp_path: Path, settings: Any
) -> Iterator[tuple[PrivateRedis, WorkerProcess]]:
    """A private Redis and a worker on it. The session's worker stops meanwhile: its outbox
    relay would otherwise send this test's messages through the shared broker."""
    celery_worker.stop()
    redis = PrivateRedis()
    redis.start()
    shared_url = app.conf.broker_url
    point_app_at(redis.url, settings)
    assert app.connection_for_write().port == redis.port
    worker = WorkerProcess({**worker_env, "CELERY_BROKER_URL": redis.url}, tmp_path / "w.log")
    worker.start()
    try:
        yield redis, worker
    finally:
        worker.stop()
        redis.stop()
        point_app_at(shared_url, settings)
        celery_worker.start()


def test_a_broker_outage_answers_no_500_and_loses_nothing(outage_broker) -> None:
    redis, worker = outage_broker
    admin = UserFactory(username="adam", roles=["admins"])
    client = token_client(admin)
    ready = AccountFactory(owner=admin, blueprint="render-only", status=AccountStatus.READY)
    failed_account = AccountFactory(owner=admin, blueprint="render-only", config={})
    failed_run = PipelineRun.objects.create(
        account=failed_account, kind="provision", status=RunStatus.FAILED, config={"label": "x"}
    )
    failed_stage = StageRun.objects.create(
        run=failed_run, position=1, kind="render", status=StageStatus.FAILED, attempt=1
    )

    redis.stop()
    started = client.post(f"{API}accounts/{ready.pk}/runs/", {"kind": "update"}, format="json")
    retried = client.post(f"{API}runs/{failed_run.pk}/stages/{failed_stage.pk}/retry/")
    with transaction.atomic():
        notify.delay_on_commit(notifications.RUN_FINISHED, failed_run.pk)

    # Recorded, answered, and kept for the broker's return.
    assert started.status_code == 201, started.content
    assert retried.status_code == 200, retried.content
    update_run = PipelineRun.objects.get(pk=started.json()["id"])
    pending = OutboxMessage.objects.filter(sent_at__isnull=True)
    assert sorted(m.task for m in pending) == [
        "accounts_app.tasks.notify",
        "pipelines.tasks.run_stage",
        "pipelines.tasks.run_stage",
    ]
    assert all(m.attempts == 1 and m.last_error for m in pending)

    redis.start()
    back = time.monotonic()
    for run in (update_run, failed_run):
        wait_until(
            lambda run=run: PipelineRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
            timeout=30,
            what=f"run {run.pk} to finish after the broker came back",
        )
    finished = time.monotonic() - back
    print(f"\nFIGURE broker outage: runs finished {finished:.1f} s after Redis came back")
    assert finished < 30
    # The runs' own notifications, written as they finished, are sent within seconds too.
    wait_until(
        lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
        timeout=15,
        what="the outbox to empty",
    )
    wait_until(
        lambda: "accounts_app.tasks.notify" in worker.log_path.read_text(),
        timeout=30,
        what="the notification to reach the worker",
    )


def test_a_broker_that_restarts_empty_gets_the_queued_stages_again(outage_broker) -> None:
    redis, worker = outage_broker
    worker.stop()  # nobody consumes: the message sits in Redis, then dies with it
    account = AccountFactory(blueprint="render-only", config={})
    run = services.start_run(account, "provision")
    assert OutboxMessage.objects.get(task="pipelines.tasks.run_stage").sent_at is not None
    redis.stop()
    redis.start()

    worker.start()  # its relay sends every queued stage again once the broker answers

    finished = wait_until(
        lambda: PipelineRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).exists(),
        timeout=30,
        what="the run to finish without waiting for the reaper",
    )
    assert finished


# --- database connections killed ----------------------------------------------------------


def terminate_other_backends() -> int:
    """What a failover does to the worker: every other connection to this database dies."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_killed_database_connections_cost_a_stage_nothing(celery_worker, wait_for_run) -> None:
    account = AccountFactory(blueprint="steady-hook", config={})
    run = services.start_run(account, "provision")
    stage = run.stages.get()
    wait_until(lambda: logged(stage, "second 2"), timeout=30, what="the hook to run")

    assert terminate_other_backends() > 0
    killed_at = time.monotonic()
    wait_until(lambda: logged(stage, "second 5"), timeout=30, what="the log to go on")
    terminate_other_backends()
    run = wait_for_run(run.pk, timeout=60)

    assert run.status == RunStatus.SUCCEEDED, run.explanation
    stage.refresh_from_db()
    assert (stage.status, stage.attempt) == (StageStatus.SUCCEEDED, 1)
    assert stage.outputs["steady_hook"] == "done"
    # The heartbeat thread lived on: beats after the kill, before the stage ended.
    assert stage.heartbeat_at is not None and stage.started_at is not None
    assert (stage.heartbeat_at - stage.started_at).total_seconds() > 3
    assert time.monotonic() - killed_at < 60


def backends_of(pid: int) -> set[int]:
    """The PostgreSQL backends serving process ``pid``: its TCP connections to the server."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                sockets.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in sockets:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND client_port = ANY(%s)",
            [ports],
        )
        return {row[0] for row in cursor.fetchall()}


def test_the_worker_keeps_its_connection_and_reopens_one_killed_meanwhile(
    celery_worker, wait_for_run
) -> None:
    if str(connection.settings_dict.get("HOST") or "").startswith("/"):
        pytest.skip("finds the worker's connections by TCP port")
    account = AccountFactory(blueprint="render-only", config={"label": "kept"})

    def provision() -> tuple[PipelineRun, int]:
        run = services.start_run(account, "provision")
        run = wait_for_run(run.pk, timeout=60)
        assert run.status == RunStatus.SUCCEEDED, run.explanation
        stage = run.stages.get()
        return run, int(stage.worker.rpartition(":")[2])

    _, child = provision()
    kept = backends_of(child)
    for _ in range(10):  # until the same pool child runs a stage again
        _, again = provision()
        if again == child:
            break
    # The stage did not open a connection of its own: the one the child kept served it.
    assert kept and backends_of(child) == kept

    # A failover while the worker is idle: its kept connection is dead before the next task.
    assert terminate_other_backends() > 0
    run, _ = provision()
    assert [(stage.status, stage.attempt) for stage in run.stages.all()] == [
        (StageStatus.SUCCEEDED, 1)
    ]


# --- a worker killed outright: the reaper -------------------------------------------------

REAPER_VARIABLES = (
    "PORTAL_HEARTBEAT_SECONDS",
    "PORTAL_HEARTBEAT_STALE_SECONDS",
    "PORTAL_REAPER_SECONDS",
)
# README's fast setting: "worker lost" at most stale + reaper = 15 s after the crash.
FAST_REAPER = {
    "PORTAL_HEARTBEAT_SECONDS": "2",
    "PORTAL_HEARTBEAT_STALE_SECONDS": "10",
    "PORTAL_REAPER_SECONDS": "5",
}


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("reaper_env", "bound"),
    [
        pytest.param(FAST_REAPER, 15, id="fast-setting"),
        # The product's defaults (heartbeat 5 s, stale 30 s, reaper every 10 s): ~40 s.
        pytest.param({}, 60, id="defaults", marks=pytest.mark.slow),
    ],
)
def test_a_worker_killed_outright_is_reaped_as_worker_lost_in_time(
    reaper_env: dict[str, str],
    bound: float,
    celery_worker: WorkerProcess,
    worker_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """SIGKILL of a whole worker (a lost machine, the OOM killer on the main process): its
    message is never redelivered (Redis's visibility timeout is hours), so the reaper of
    another worker's beat fails the stage as "worker lost"; the hook died with its worker."""
    celery_worker.stop()  # the stage must go to the worker that is killed
    env = {k: v for k, v in worker_env.items() if k not in REAPER_VARIABLES} | reaper_env
    doomed = WorkerProcess(env, tmp_path / "doomed.log", name="doomed")
    survivor = WorkerProcess(
        env,
        tmp_path / "survivor.log",
        name="survivor",
        extra_args=("--beat", "--schedule", str(tmp_path / "beat-schedule")),
    )
    try:
        doomed.start()
        account = AccountFactory(blueprint="slow-hook", config={})
        run = services.start_run(account, "provision")
        stage = run.stages.get(kind="pre_hooks")
        wait_until(lambda: logged(stage, "attempt 1 for"), timeout=60, what="the hook to start")
        survivor.start()  # after the claim: the stage's message is the doomed worker's
        wait_until(
            lambda: " ready." in survivor.log_path.read_text(), timeout=60, what="the survivor"
        )
        stage.refresh_from_db()
        assert stage.status == StageStatus.RUNNING and stage.process_group
        assert doomed.proc is not None

        os.killpg(doomed.proc.pid, signal.SIGKILL)
        killed_at = timezone.now()
        doomed.proc.wait(timeout=10)
        doomed.proc = None

        wait_until(
            lambda: StageRun.objects.get(pk=stage.pk).status != StageStatus.RUNNING,
            timeout=bound + 30,
            what="the reaper",
        )
        stage.refresh_from_db()
        assert stage.finished_at is not None
        took = (stage.finished_at - killed_at).total_seconds()
        print(f"\nFIGURE worker lost {took:.1f} s after SIGKILL ({reaper_env or 'defaults'})")
        assert (stage.status, stage.explanation) == (StageStatus.FAILED, engine.WORKER_LOST)
        assert took <= bound, f"worker lost after {took:.1f} s"
        assert logged(stage, f"{engine.WORKER_LOST}: no heartbeat from {stage.worker}")
        # No orphan: the hook's process group went with its worker.
        assert not group_alive(stage.process_group)
        # Retry: attempt 2 runs on the survivor and the run finishes.
        services.retry_stage(stage)
        wait_until(
            lambda: PipelineRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
            timeout=60,
            what="the retried run",
        )
        stage.refresh_from_db()
        assert (stage.attempt, stage.outputs["slow_hook"]) == (2, "done")
    finally:
        doomed.stop()
        survivor.stop()
        celery_worker.start()


# --- a graceful restart -------------------------------------------------------------------


def stop_like_systemd(worker: WorkerProcess) -> None:
    """As systemd's stop does: SIGTERM to every process of the worker's group; wait."""
    assert worker.proc is not None
    os.killpg(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(timeout=60)
    worker.proc = None


def test_sigterm_to_the_worker_group_lets_the_running_stage_finish(
    celery_worker: WorkerProcess, wait_for_run
) -> None:
    account = AccountFactory(blueprint="steady-hook", config={})
    run = services.start_run(account, "provision")
    stage = run.stages.get()
    wait_until(lambda: logged(stage, "second 1"), timeout=30, what="the hook to run")
    stop_like_systemd(celery_worker)

    stage.refresh_from_db()
    assert (stage.status, stage.attempt) == (StageStatus.SUCCEEDED, 1), stage.explanation
    assert stage.outputs["steady_hook"] == "done"
    celery_worker.start()
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED


def test_sigterm_to_the_worker_group_lets_a_running_apply_finish(
    celery_worker: WorkerProcess, wait_for_run
) -> None:
    """Terraform leads a process group of its own, so the group SIGTERM does not reach it:
    the apply finishes, its outputs are recorded, and the next plan has nothing to do."""
    account = AccountFactory(
        name=f"sigterm-{os.getpid()}-{time.monotonic_ns() % 10**6}",
        blueprint="tf-slow-apply",
        config={"sleep_seconds": 6},
    )
    run = services.start_run(account, "provision")
    apply = run.stages.get(kind="apply")
    wait_until(lambda: logged(apply, "Executing:"), timeout=120, what="the apply's sleep")
    stop_like_systemd(celery_worker)

    apply.refresh_from_db()
    assert (apply.status, apply.attempt) == (StageStatus.SUCCEEDED, 1), apply.explanation
    celery_worker.start()
    assert wait_for_run(run.pk).status == RunStatus.SUCCEEDED
    account.refresh_from_db()
    assert account.outputs["slept"]["value"] == 6
    # Nothing was lost between Terraform and its state: an update plans no change.
    update = wait_for_run(services.start_run(account, "update").pk, timeout=120)
    assert update.status == RunStatus.SUCCEEDED, update.explanation
    plan = update.stages.get(kind="plan").outputs
    assert (plan["add"], plan["change"], plan["destroy"]) == (0, 0, 0), plan


# --- one lock order -----------------------------------------------------------------------


def test_parallel_retries_approvals_and_cancels_never_deadlock(celery_worker) -> None:
    """Retry, approve and cancel clicks at one run through the API from several threads
    while the worker claims and records its stages: no answer but a success or a refusal
    (never a 500), and nothing left queued."""
    admin = UserFactory(username="adam", roles=["admins"])
    account = AccountFactory(owner=admin, blueprint="hook-fails", config={})
    run = PipelineRun.objects.create(account=account, kind="provision", status=RunStatus.RUNNING)
    plan = {"plan_sha256": "ab" * 32, "add": 0, "change": 0, "replace": 0, "destroy": 1}
    StageRun.objects.create(
        run=run, position=1, kind="plan", status=StageStatus.SUCCEEDED, attempt=1, outputs=plan
    )
    approval = StageRun.objects.create(
        run=run, position=2, kind="approve_plan", status=StageStatus.WAITING_APPROVAL, attempt=1
    )
    StageRun.objects.create(run=run, position=3, kind="pre_hooks")  # fails at once, every time
    approver = UserFactory(username="april", roles=["approvers"])
    answers: collections.Counter[tuple[str, int]] = collections.Counter()
    errors: list[BaseException] = []
    log_start = celery_worker.log_path.stat().st_size
    deadline = time.monotonic() + 12

    def retry(client: APIClient) -> tuple[str, int] | None:
        stage = run.stages.filter(status__in=[StageStatus.FAILED, StageStatus.CANCELLED]).first()
        if stage is None:
            return None
        return "retry", client.post(f"{API}runs/{run.pk}/stages/{stage.pk}/retry/").status_code

    def approve(client: APIClient) -> tuple[str, int]:
        url = f"{API}runs/{run.pk}/stages/{approval.pk}/approve/"
        return "approve", client.post(url, {"comment": "ok"}, format="json").status_code

    def cancel(client: APIClient) -> tuple[str, int]:
        return "cancel", client.post(f"{API}runs/{run.pk}/cancel/").status_code

    def click(action: Callable[[APIClient], tuple[str, int] | None], user: Any) -> None:
        client = token_client(user)
        client.raise_request_exception = False  # a server error is an answer: a 500
        try:
            while time.monotonic() < deadline:
                answer = action(client)
                if answer is not None:
                    answers[answer] += 1
                time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=click, args=(action, user))
        for action, user in (
            (retry, admin),
            (retry, admin),
            (retry, admin),
            (approve, approver),
            (approve, approver),
            (cancel, admin),
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    server_errors = sum(n for (_, code), n in answers.items() if code >= 500)
    print(f"\nFIGURE parallel clicks: {server_errors} 500s in {dict(answers)}")
    assert errors == []
    # A refusal (409) is the click not fitting the run's state at that moment.
    assert {code for _, code in answers} <= {200, 201, 409}, answers
    assert server_errors == 0
    # The worker lost no deadlock either: every stage it was given ends, none stays queued.
    # The worker may end the run between the check and the cancel: a refusal then.
    with contextlib.suppress(services.RunRefused):
        if PipelineRun.objects.get(pk=run.pk).is_active:
            services.cancel_run(run)
    wait_until(
        lambda: (
            not PipelineRun.objects.get(pk=run.pk).is_active
            and not run.stages.filter(status__in=[StageStatus.QUEUED, StageStatus.RUNNING]).exists()
        ),
        timeout=60,
        what="the run to settle",
    )
    assert worker_log_has_no_deadlock(celery_worker.log_path, since=log_start)


def worker_log_has_no_deadlock(path: Path, *, since: int) -> bool:
    """No stage task of this test lost a deadlock (the log is the session's: only what
    was written from byte ``since`` on, and only the engine's tasks: a notification of
    an earlier test may meet that test's database flush, which is no lock order)."""
    with path.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    return not any(
        "deadlock detected" in line.lower() and "accounts_app.tasks" not in line for line in lines
    )
