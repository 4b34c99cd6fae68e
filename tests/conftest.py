"""Shared fixtures. Integration fixtures start real processes: a Celery worker, moto."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import TransactionTestCase
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from pipelines.models import PipelineRun, RunStatus
from tests.clone_env import clone_env, production_connections
from tests.factories import UserFactory

pytest_plugins = ["tests.conftest_moto"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _flush_retrying_deadlocks(original: Callable[[TransactionTestCase], None]) -> Any:
    """The session's worker keeps polling the tables a test's closing TRUNCATE locks, in
    another order; PostgreSQL breaks such a deadlock by cancelling one side, and when that
    is the TRUNCATE, the flush is simply tried again."""

    def fixture_teardown(self: TransactionTestCase) -> None:
        for attempt in range(5):
            try:
                original(self)
                return
            except CommandError as error:
                if "deadlock detected" not in str(error.__cause__) or attempt == 4:
                    raise
                time.sleep(0.2)

    return fixture_teardown


TransactionTestCase._fixture_teardown = _flush_retrying_deadlocks(  # type: ignore[method-assign]
    TransactionTestCase._fixture_teardown
)


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def process_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_command(*args: str) -> tuple[int, str, str]:
    """A management command's exit code, stdout and stderr (a ``SystemExit`` is its code)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def token_client(user: Any) -> APIClient:
    """An API client that authenticates with the user's token, as a script would."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def sally() -> Any:
    """A requester."""
    return UserFactory(username="sally", roles=["requesters"])


@pytest.fixture
def april() -> Any:
    """An approver."""
    return UserFactory(username="april", roles=["approvers"])


@pytest.fixture
def adam() -> Any:
    """An admin."""
    return UserFactory(username="adam", roles=["admins"])


@pytest.fixture(scope="session")
def blueprints_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped blueprints plus the test ones, copied so tests may edit them.

    A test blueprint with a `terraform-from` file instead of a terraform/ folder gets the
    named shipped blueprint's Terraform, so it tests those templates, not a stale copy.
    """
    root = tmp_path_factory.mktemp("blueprints")
    for source in (ROOT / "blueprints", FIXTURES / "blueprints"):
        for folder in source.iterdir():
            if folder.is_dir():
                shutil.copytree(folder, root / folder.name, symlinks=True)
    for pointer in root.glob("*/terraform-from"):
        origin = root / pointer.read_text().strip() / "terraform"
        shutil.copytree(origin, pointer.parent / "terraform")
        pointer.unlink()
    return root


@pytest.fixture(scope="session")
def var_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(autouse=True)
def _portal_dirs(settings: Any, blueprints_root: Path, var_root: Path) -> None:
    settings.PORTAL_BLUEPRINTS_DIR = blueprints_root
    settings.PORTAL_WORK_DIR = var_root / "work"
    # The session's own production database, never the defaults' (the portal's server).
    settings.PORTAL_CONNECTIONS = {**settings.PORTAL_CONNECTIONS, **production_connections()}


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a transactional test, stop its runs before the database is flushed.

    The session's Celery worker would otherwise go on writing while the flush
    truncates the tables (a deadlock, then the next test finds stale rows).
    """
    marker = request.node.get_closest_marker("django_db")
    if not marker or not marker.kwargs.get("transaction"):
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so torn down after this
    yield
    from pipelines.models import ACTIVE_RUN_STATUSES, StageRun, StageStatus
    from pipelines.services import RunRefused, cancel_run

    for run in PipelineRun.objects.filter(status__in=ACTIVE_RUN_STATUSES):
        with contextlib.suppress(RunRefused):
            cancel_run(run)
    deadline = time.monotonic() + 60
    while StageRun.objects.filter(status=StageStatus.RUNNING).exists():
        if time.monotonic() > deadline:
            break  # the flush may still work; the test's own result stands
        time.sleep(0.2)


@pytest.fixture(scope="session")
def worker_env(
    django_db_setup: None, blueprints_root: Path, var_root: Path, moto_server: str
) -> dict[str, str]:
    """Environment for processes that must share the test database, broker and moto server."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)  # moto_server has put AWS_ENDPOINT_URL and dummy keys here
    env.update(clone_env())
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    env["DATABASE_URL"] = f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    # Fast beats, so the reaper test need not wait long for a heartbeat to go stale.
    env["PORTAL_HEARTBEAT_SECONDS"] = "1"
    env["PORTAL_BLUEPRINTS_DIR"] = str(blueprints_root)
    env["PORTAL_WORK_DIR"] = str(var_root / "work")
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"  # the same settings as this session
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A real `celery worker` process on the test database and broker."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        name: str = "test-worker",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.name = name  # two workers at once need two node names
        self.extra_args = extra_args  # e.g. ("--beat", "--schedule", path)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from portal.celery import app

        app.control.purge()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--loglevel=INFO",
                "--concurrency=2",
                "--pool=prefork",
                f"--hostname={self.name}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                *self.extra_args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def celery_worker(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(worker_env, tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    yield worker
    worker.stop()
    print(f"celery worker log: {worker.log_path}")


@pytest.fixture
def wait_for_run() -> Callable[..., PipelineRun]:
    def wait(run_id: int, statuses: tuple[str, ...] = (), timeout: float = 120) -> PipelineRun:
        """Poll until the run reaches one of ``statuses`` (default: any final status)."""
        wanted = statuses or (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
        deadline = time.monotonic() + timeout
        while True:
            run = PipelineRun.objects.get(pk=run_id)
            if run.status in wanted:
                return run
            if time.monotonic() > deadline:
                stages = [(s.kind, s.status, s.explanation) for s in run.stages.all()]
                raise AssertionError(f"run {run_id} is {run.status} after {timeout}s: {stages}")
            time.sleep(0.3)

    return wait
