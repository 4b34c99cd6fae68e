"""A daemon thread that does one thing every few seconds until it is stopped.

Used by a running stage's heartbeat and by the outbox relay. ``tick`` runs in the
thread; a database error there costs one tick, never the thread: the thread's
connection is closed and the next tick opens a new one. No connection is kept between
ticks (a worker forks its children from the process these threads live in, and a child
must not inherit a live connection).
"""

from __future__ import annotations

import logging
import threading

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)


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
            try:
                self.tick()
            except DatabaseError as exc:
                logger.warning("%s: %s; reconnecting", self.name, exc)
            finally:
                connection.close()
