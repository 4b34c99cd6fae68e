"""The runner's guard server (pipelines/clients/guard.py): one per process, started once,
replaced when it dies, never shared with a forked child. Real processes, no services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pipelines.clients.process import ProcessResult, run_process
from tests.conftest import process_alive, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin"}
# A program that prints its guard's parent: the guard server that forked the guard.
PRINT_SERVER = ["/bin/sh", "-c", "cut -d' ' -f4 /proc/$PPID/stat"]


def _server_of_a_command(cwd: Path) -> int:
    result = run_process(argv=PRINT_SERVER, cwd=cwd, env=ENV, capture_stdout=True)
    assert result.returncode == 0, result.tail
    return int(result.stdout)


def test_commands_share_one_server_that_is_replaced_when_it_dies(tmp_path: Path) -> None:
    server = _server_of_a_command(tmp_path)
    assert _server_of_a_command(tmp_path) == server  # started once, not per command

    # A running command when its server is killed (the OOM killer, say): it is stopped,
    # with what it started, and the runner returns instead of waiting forever.
    started: list[int] = []
    outcome: list[ProcessResult] = []
    running = threading.Thread(
        target=lambda: outcome.append(
            run_process(
                argv=["/bin/sh", "-c", "sleep 60 & echo $!; wait"],
                cwd=tmp_path,
                env=ENV,
                on_line=lambda line: started.append(int(line)),
                grace_s=1.0,
            )
        )
    )
    running.start()
    wait_until(lambda: started, timeout=10, what="the command to start")
    os.kill(server, signal.SIGKILL)
    running.join(timeout=15)
    assert not running.is_alive() and outcome[0].returncode != 0
    wait_until(lambda: not process_alive(started[0]), timeout=5, what="its sleep to be killed")

    replacement = _server_of_a_command(tmp_path)
    assert replacement != server and process_alive(replacement)


# Runs a command, forks, runs one in the child too: each prints the server it used.
FORKED = """
import os
from pathlib import Path
from pipelines.clients.process import run_process
def server():
    argv, env = ["/bin/sh", "-c", "cut -d' ' -f4 /proc/$PPID/stat"], {"PATH": "/usr/bin:/bin"}
    result = run_process(argv=argv, cwd=Path("."), env=env, capture_stdout=True)
    return int(result.stdout)
print("parent", server(), flush=True)
child = os.fork()
if child == 0:
    print("child", server(), flush=True)
    os._exit(0)
os.waitpid(child, 0)
print("parent", server(), flush=True)
"""


def test_a_forked_child_gets_a_server_of_its_own() -> None:
    """As a Celery prefork pool child: the parent's server would die with the parent, not
    with the child, so the child must not use it."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    used = [line.split() for line in done.stdout.splitlines()]
    assert [who for who, _ in used] == ["parent", "child", "parent"]
    assert used[0][1] == used[2][1] != used[1][1]


def test_a_program_the_kernel_will_not_run_fails_with_127_and_says_why(tmp_path: Path) -> None:
    """Found and executable (so the runner's check passes) but not a program: no ``#!``."""
    script = tmp_path / "no-shebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)

    result = run_process(argv=[str(script)], cwd=tmp_path, env=ENV)

    assert result.returncode == 127 and result.returncodes == (127,)
    assert result.tail == [f"cannot run {script}: Exec format error"]
