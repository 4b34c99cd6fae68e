"""Daemon threads that do something every few seconds: ``PeriodicThread`` one thing until
it is stopped (the outbox relay), ``SharedTicker`` the ticks of many short-lived owners
(running stages' heartbeats). ``tick`` runs in the
thread; a database error there costs one tick, never the thread: the thread's
connection is closed and the next tick opens a new one. No connection is kept between
ticks (a worker forks its children from the process these threads live in, and a child
must not inherit a live connection).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


def _tick_once(*, name: str, tick: Callable[[], None]) -> None:
    """One tick: a database error costs only this tick; the connection is closed after."""
    try:
        tick()
    except DatabaseError as exc:
        logger.warning("%s: %s; reconnecting", name, exc)
    finally:
        connection.close()


class PeriodicThread:
    def __init__(self, *, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            _tick_once(name=self.name, tick=self.tick)


class Ticking(Protocol):
    """What ``SharedTicker`` runs: ``tick()`` every ``interval`` seconds."""

    interval: float

    def tick(self) -> None: ...


class SharedTicker:
    """Periodic work of short-lived owners (each running stage's heartbeat) on one daemon
    thread of the process, started on first use (again in a forked child): a stage of a
    few milliseconds does not pay for starting and joining a thread of its own.

    Each tick runs as ``PeriodicThread``'s do: a database error costs that tick, and the
    thread's connection is closed after it. ``remove`` returns once no tick of that owner
    runs, and none runs after it."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self._changed = threading.Condition()
        self._due: dict[Ticking, float] = {}
        self._ticking: dict[Ticking, threading.Lock] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, owner: Ticking) -> None:
        with self._changed:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._due[owner] = time.monotonic() + owner.interval
            self._ticking[owner] = threading.Lock()
            self._changed.notify()

    def remove(self, owner: Ticking) -> None:
        with self._changed:
            self._due.pop(owner, None)
            ticking = self._ticking.pop(owner, None)
        if ticking is not None:
            with ticking:  # a tick of it that began before is over
                pass

    def _loop(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [owner for owner, at in self._due.items() if at <= now]
                if not due:
                    wait = min(self._due.values(), default=now + 3600) - now
                    self._changed.wait(timeout=wait)
                    continue
                for owner in due:
                    self._due[owner] = now + owner.interval
                locks = {owner: self._ticking[owner] for owner in due}
            for owner, lock in locks.items():
                with lock:
                    if owner in self._due:  # not removed meanwhile
                        _tick_once(name=self.name, tick=owner.tick)
