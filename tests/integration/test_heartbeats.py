"""A real worker records its heartbeat, and /healthz shows it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from portal import heartbeats
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_running_worker_shows_in_healthz(celery_worker: Any) -> None:
    def recorded() -> dict[str, Any] | None:
        worker: dict[str, Any] = Client().get("/healthz/").json()["worker"]
        return worker if worker["last_heartbeat"] else None

    # At start, then at most every RECORD_EVERY_SECONDS (a flush may have removed the row).
    worker = wait_until(
        recorded, timeout=heartbeats.RECORD_EVERY_SECONDS * 3, what="the worker's heartbeat"
    )
    assert 0 <= worker["age_seconds"] < heartbeats.RECORD_EVERY_SECONDS * 3
