"""Database work that survives a dropped connection (a failover, ``pg_terminate_backend``).

Django reconnects on the next query once the broken connection is closed; these helpers
close it and try again a few times with a short backoff. Only work outside a transaction
can be retried here: inside one, the caller's whole transaction must be tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 5
FIRST_PAUSE_SECONDS = 0.2
MAX_PAUSE_SECONDS = 2.0


def retrying(work: Callable[[], T], *, what: str, attempts: int = ATTEMPTS) -> T:
    """``work()``, again on a fresh connection if the connection broke under it."""
    for attempt in range(1, attempts):
        try:
            return work()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block:
                raise
            pause = min(FIRST_PAUSE_SECONDS * 2 ** (attempt - 1), MAX_PAUSE_SECONDS)
            logger.warning("%s: database error (%s); again in %.1f s", what, exc, pause)
            connection.close()
            time.sleep(pause)
    return work()
