"""The runner's ``on_idle`` (a burst of output written at once) and the shared ticker of
stages' heartbeats; real child processes and threads, no services."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pipelines.clients.process import run_process
from pipelines.periodic import SharedTicker
from tests.conftest import wait_until

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_on_idle_comes_after_each_burst_in_the_callers_thread_and_after_the_last_line(
    tmp_path: Path,
) -> None:
    events: list[tuple[str, int]] = []
    script = "for i in 1 2 3 4 5; do echo burst-one-$i; done; sleep 1; echo burst-two"

    run_process(
        argv=["/bin/sh", "-c", script],
        cwd=tmp_path,
        env=ENV,
        on_line=lambda line: events.append((line, threading.get_ident())),
        on_idle=lambda: events.append(("idle", threading.get_ident())),
        poll_s=5.0,  # no cancel check during the test: only the bursts call on_idle
    )

    assert {thread for _, thread in events} == {threading.get_ident()}
    names = [name for name, _ in events]
    # Every line, in order; the first burst is given its idle call before the second
    # burst, and the last line has one after it.
    assert [name for name in names if name != "idle"] == [
        *(f"burst-one-{i}" for i in range(1, 6)),
        "burst-two",
    ]
    assert names.index("idle") < names.index("burst-two")
    assert names[-1] == "idle"
    assert names.count("idle") <= 3  # a burst, not a line, at a time


def test_on_idle_is_also_called_at_each_cancel_check_of_a_quiet_program(tmp_path: Path) -> None:
    idle: list[float] = []

    run_process(
        argv=["/bin/sh", "-c", "sleep 1"],
        cwd=tmp_path,
        env=ENV,
        on_idle=lambda: idle.append(time.monotonic()),
        poll_s=0.2,
    )

    assert len(idle) >= 3


class _Counter:
    interval = 0.05

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_shared_ticker_ticks_each_owner_until_it_is_removed() -> None:
    ticker = SharedTicker(name="test-ticks")
    first, second = _Counter(), _Counter()
    ticker.add(first)
    ticker.add(second)

    wait_until(lambda: first.ticks >= 3 and second.ticks >= 3, timeout=5, what="ticks")
    ticker.remove(first)
    after_removal = first.ticks
    wait_until(lambda: second.ticks >= after_removal + 5, timeout=5, what="more ticks")

    assert first.ticks == after_removal
    ticker.remove(second)
