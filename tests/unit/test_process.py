"""The one process runner, with real child processes (no services needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipelines.clients.process import Program, run_pipeline, run_process
from tests.conftest import process_alive, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_lines_arrive_in_the_callers_thread_as_they_are_printed(tmp_path: Path) -> None:
    seen: list[tuple[float, str, int]] = []
    pids: list[int] = []

    result = run_process(
        argv=["/bin/sh", "-c", "echo one; echo two >&2; sleep 0.5; echo three"],
        cwd=tmp_path,
        env=ENV,
        on_line=lambda line: seen.append((time.monotonic(), line, threading.get_ident())),
        on_start=pids.append,
    )
    ended = time.monotonic()

    assert result.returncode == 0
    assert [line for _, line, _ in seen] == ["one", "two", "three"]
    assert {thread for _, _, thread in seen} == {threading.get_ident()}
    assert ended - seen[0][0] >= 0.4, "the first line only arrived at the end"
    assert result.tail == ["one", "two", "three"]
    assert len(pids) == 1 and pids[0] > 0


def test_stdout_and_stderr_lines_keep_their_order(tmp_path: Path) -> None:
    script = "; ".join(f"echo out{i}; echo err{i} >&2" for i in range(50))
    seen: list[str] = []
    run_process(argv=["/bin/sh", "-c", script], cwd=tmp_path, env=ENV, on_line=seen.append)
    assert seen == [line for i in range(50) for line in (f"out{i}", f"err{i}")]


def test_the_child_gets_only_the_environment_given(tmp_path: Path) -> None:
    result = run_process(argv=["/usr/bin/env"], cwd=tmp_path, env={"ONLY": "this"})

    assert result.tail == ["ONLY=this"]


def test_stdout_can_be_captured_whole_while_stderr_streams(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_process(
        argv=["/bin/sh", "-c", "echo '{\"a\": 1}'; echo progress >&2"],
        cwd=tmp_path,
        env=ENV,
        on_line=lines.append,
        capture_stdout=True,
    )

    assert result.stdout == b'{"a": 1}\n'
    assert lines == ["progress"]


def test_lines_are_redacted_before_anyone_sees_them(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_process(
        argv=["/bin/echo", "token hunter22"],
        cwd=tmp_path,
        env=ENV,
        on_line=lines.append,
        redact=lambda text: text.replace("hunter22", "[redacted]"),
    )

    assert lines == result.tail == ["token [redacted]"]


def test_timeout_interrupts_the_group_and_leaves_nothing_running(tmp_path: Path) -> None:
    marker = f"sleep 3{uuid.uuid4().int % 1000:03d}"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\necho start\n{marker} &\necho bg $!\n{marker}\necho never\n")
    script.chmod(0o755)
    lines: list[str] = []

    started = time.monotonic()
    result = run_process(
        argv=[str(script)], cwd=tmp_path, env=ENV, timeout_s=1, on_line=lines.append
    )

    assert result.timed_out and not result.cancelled
    assert time.monotonic() - started < 5
    assert "never" not in lines
    background = int(next(line for line in lines if line.startswith("bg ")).split()[1])
    wait_until(lambda: not process_alive(background), timeout=3, what="the background job to end")


def test_cancel_gives_a_grace_period_then_kills(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.sh"
    script.write_text("#!/bin/sh\ntrap '' INT\necho working\nwhile :; do sleep 0.1; done\n")
    script.chmod(0o755)
    asked = threading.Event()

    def on_line(line: str) -> None:
        if line == "working":
            asked.set()

    started = time.monotonic()
    result = run_process(
        argv=[str(script)],
        cwd=tmp_path,
        env=ENV,
        on_line=on_line,
        should_cancel=asked.is_set,
        grace_s=1.0,
        poll_s=0.1,
    )

    assert result.cancelled and result.killed
    assert result.stop_seconds is not None and 0.9 <= result.stop_seconds < 3
    assert time.monotonic() - started < 5


def test_a_failing_callback_stops_the_child(tmp_path: Path) -> None:
    pids: list[int] = []

    def on_line(line: str) -> None:
        raise RuntimeError("log storage is down")

    with pytest.raises(RuntimeError, match="log storage is down"):
        run_process(
            argv=["/bin/sh", "-c", "echo hi; sleep 30"],
            cwd=tmp_path,
            env=ENV,
            on_line=on_line,
            on_start=pids.append,
        )
    assert not process_alive(pids[0])


def test_a_missing_program_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        run_process(argv=[str(tmp_path / "nope")], cwd=tmp_path, env=ENV)


# A worker stand-in: runs a child through the runner, prints the child's pid, waits.
PARENT = """
import sys
from pathlib import Path
from pipelines.clients.process import Program, run_pipeline, run_process
run_process(
    argv=["/bin/sleep", "60"],
    cwd=Path("."),
    env={"PATH": "/usr/bin:/bin"},
    on_start=lambda pid: print(pid, flush=True),
)
"""


def _kill_the_parent_then_expect_gone(*, script: str, lines: int, what: str) -> None:
    """Run ``script`` (a worker stand-in that prints the pids of what it started, over
    ``lines`` lines), SIGKILL it as the OOM killer or ``kill -9`` would, and wait for
    every printed pid to be gone."""
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for _ in range(lines) for pid in parent.stdout.readline().split()]
        assert pids and all(process_alive(pid) for pid in pids)

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)

        wait_until(lambda: not any(process_alive(pid) for pid in pids), timeout=5, what=what)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_child_dies_with_its_killed_parent() -> None:
    _kill_the_parent_then_expect_gone(
        script=PARENT, lines=1, what="the child to die with its parent"
    )


# A hook-like program that starts a child of its own, then waits.
TREE = """
import sys
from pathlib import Path
from pipelines.clients.process import Program, run_pipeline, run_process
run_process(
    argv=["/bin/sh", "-c", "sleep 60 & echo $$ $!; wait"],
    cwd=Path("."),
    env={"PATH": "/usr/bin:/bin"},
    on_line=lambda line: print(line, flush=True),
)
"""


def test_what_the_child_started_dies_with_the_killed_parent_too() -> None:
    _kill_the_parent_then_expect_gone(
        script=TREE, lines=1, what="the shell and its grandchild to end"
    )


def test_the_exit_status_and_a_death_by_signal_come_through(tmp_path: Path) -> None:
    assert run_process(argv=["/bin/sh", "-c", "exit 3"], cwd=tmp_path, env=ENV).returncode == 3
    killed = run_process(argv=["/bin/sh", "-c", "kill -TERM $$"], cwd=tmp_path, env=ENV)
    assert killed.returncode == -signal.SIGTERM


# --- pipelines: programs connected stdout to stdin, under the same guard --------------


def test_a_pipeline_passes_bytes_from_program_to_program(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/sh", "-c", "seq 1 20000; echo made >&2"], env=ENV),
            Program(argv=["/bin/sh", "-c", "wc -l; echo counted >&2"], env=ENV),
        ],
        cwd=tmp_path,
        on_line=lines.append,
    )

    assert result.returncode == 0 and result.returncodes == (0, 0)
    assert sorted(lines) == ["20000", "counted", "made"]


def test_each_program_of_a_pipeline_gets_only_its_own_environment(tmp_path: Path) -> None:
    result = run_pipeline(
        programs=[
            Program(argv=["/usr/bin/env"], env={"FIRST": "one"}),
            Program(
                argv=["/bin/sh", "-c", "cat; env | grep -v -e '^PWD=' -e '^SHLVL=' -e '^_='"],
                env={"SECOND": "two", "PATH": "/usr/bin:/bin"},
            ),
        ],
        cwd=tmp_path,
    )

    assert sorted(result.tail) == ["FIRST=one", "PATH=/usr/bin:/bin", "SECOND=two"]


def test_a_pipeline_stdin_and_captured_stdout(tmp_path: Path) -> None:
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/cat"], env=ENV),
            Program(argv=["/usr/bin/tr", "a-z", "A-Z"], env=ENV),
        ],
        cwd=tmp_path,
        stdin_data=b"hello\n",
        capture_stdout=True,
    )

    assert result.stdout == b"HELLO\n"


def test_a_failing_first_program_kills_the_ones_reading_from_it(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/sh", "-c", "echo partial; exit 4"], env=ENV),
            # Would take its (incomplete) input as whole: it must never see its end.
            Program(argv=["/bin/sh", "-c", "cat >/dev/null; echo finished"], env=ENV),
        ],
        cwd=tmp_path,
    )

    assert result.returncodes == (4, -signal.SIGKILL)
    assert result.returncode == -signal.SIGKILL
    assert "finished" not in result.tail
    assert time.monotonic() - started < 10


def test_a_failing_second_program_fails_the_pipeline(tmp_path: Path) -> None:
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/sh", "-c", "yes | head -c 10000000"], env=ENV),
            Program(
                argv=["/bin/sh", "-c", "head -c 10 >/dev/null; echo refused >&2; exit 5"], env=ENV
            ),
        ],
        cwd=tmp_path,
    )

    assert result.returncode == 5
    assert result.returncodes[1] == 5 and result.returncodes[0] != 0  # its reader went away
    assert "refused" in result.tail


def test_a_missing_program_of_a_pipeline_raises_oserror_before_anything_runs(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(OSError):
        run_pipeline(
            programs=[
                Program(argv=["/bin/sh", "-c", f"touch {marker}"], env=ENV),
                Program(argv=[str(tmp_path / "nope")], env=ENV),
            ],
            cwd=tmp_path,
        )
    assert not marker.exists()


def test_a_pipeline_times_out_and_leaves_nothing_running(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/sh", "-c", "echo first $$ >&2; sleep 30"], env=ENV),
            Program(argv=["/bin/sh", "-c", "echo second $$; cat; sleep 30"], env=ENV),
        ],
        cwd=tmp_path,
        timeout_s=1,
        grace_s=1,
        on_line=lines.append,
    )

    assert result.timed_out
    pids = [int(line.split()[1]) for line in lines if line.split()[0] in ("first", "second")]
    assert len(pids) == 2
    wait_until(
        lambda: not any(process_alive(p) for p in pids), timeout=3, what="both programs to end"
    )


def test_a_pipeline_is_cancelled(tmp_path: Path) -> None:
    asked = threading.Event()
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/sh", "-c", "echo going; sleep 30"], env=ENV),
            Program(argv=["/bin/cat"], env=ENV),
        ],
        cwd=tmp_path,
        on_line=lambda line: asked.set(),
        should_cancel=asked.is_set,
        poll_s=0.1,
    )

    assert result.cancelled and not result.killed
    assert result.stop_seconds is not None and result.stop_seconds < 3


def test_pipeline_lines_are_redacted(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_pipeline(
        programs=[
            Program(argv=["/bin/sh", "-c", "echo token hunter22 >&2; echo data"], env=ENV),
            Program(argv=["/bin/sh", "-c", "cat; echo again hunter22"], env=ENV),
        ],
        cwd=tmp_path,
        on_line=lines.append,
        redact=lambda text: text.replace("hunter22", "[redacted]"),
    )

    assert sorted(lines) == sorted(result.tail) == ["again [redacted]", "data", "token [redacted]"]


# A worker stand-in running a pipeline: prints the programs' pids, waits.
PIPE_PARENT = """
from pathlib import Path
from pipelines.clients.process import Program, run_pipeline
env = {"PATH": "/usr/bin:/bin"}
run_pipeline(
    programs=[
        Program(argv=["/bin/sh", "-c", "echo $$ >&2; exec sleep 60"], env=env),
        Program(argv=["/bin/sh", "-c", "echo $$; sleep 60 & echo $!; cat"], env=env),
    ],
    cwd=Path("."),
    on_line=lambda line: print(line, flush=True),
)
"""


def test_every_program_of_a_pipeline_dies_with_its_killed_parent() -> None:
    _kill_the_parent_then_expect_gone(
        script=PIPE_PARENT,
        lines=3,
        what="both programs and what they started to die with the parent",
    )


# As for Terraform: the program alone is interrupted, then what it left behind is killed.
PROGRAM_ONLY = """
from pathlib import Path
from pipelines.clients.process import run_process
run_process(
    argv=["/bin/sh", "-c", "sleep 60 & echo $$ $!; wait"],
    cwd=Path("."),
    env={"PATH": "/usr/bin:/bin"},
    on_line=lambda line: print(line, flush=True),
    interrupt_group=False,
    grace_s=3.0,  # longer than the guard waits for its pipes: it must kill them itself
)
"""


def test_a_program_interrupted_alone_leaves_nothing_when_its_parent_is_killed() -> None:
    _kill_the_parent_then_expect_gone(
        script=PROGRAM_ONLY, lines=1, what="the program and what it left behind to end"
    )
