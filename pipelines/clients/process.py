"""Hook processes: an argument list (never a shell string), a minimal environment,
a timeout, output streamed line by line, and a kill that reaches the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TERM_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    tail: list[str]
    timed_out: bool = False
    cancelled: bool = False


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    on_line: Callable[[str], None],
    should_cancel: Callable[[], bool] = lambda: False,
    tail_size: int = 20,
) -> ProcessResult:
    """Run argv to completion, streaming each output line to on_line as it is printed."""
    tail: deque[str] = deque(maxlen=tail_size)
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so children die with it
    )

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            tail.append(line)
            on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    timed_out = cancelled = False
    while proc.poll() is None:
        if time.monotonic() > deadline:
            timed_out = True
        elif should_cancel():
            cancelled = True
        if timed_out or cancelled:
            _stop_group(proc)
            break
        time.sleep(0.1)
    proc.wait()
    reader.join(timeout=5)
    return ProcessResult(proc.returncode, list(tail), timed_out, cancelled)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=TERM_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
