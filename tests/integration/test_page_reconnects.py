"""Pages and the API after a database failover: a kept connection that the server killed
(``pg_terminate_backend``, as a failover does) is checked before use and reopened, so the
next request is answered normally rather than with a 500.

Through a real gunicorn process that keeps its connection between requests, as in
production (Django's test client skips the request-start check that this is about, and
pytest-django's live server closes its connections after every request).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.conftest import ROOT, wait_until
from tests.factories import UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def gunicorn(worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """One sync gunicorn worker on the test database; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/login/", timeout=2).close()  # noqa: S310
        except OSError:  # refused, reset or timed out while it starts
            return False
        return True

    try:
        wait_until(up, timeout=30, what="gunicorn to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _accounts(url: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the live server on loopback
        f"{url}/api/v1/accounts/", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        return answer.status, json.loads(answer.read())


def _kill_other_backends() -> int:
    """Terminate every other session on the test database (the live server's ones)."""
    db = settings.DATABASES["default"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [db["NAME"]],
        )
        (killed,) = cursor.fetchone()
    return int(killed)


def test_the_api_answers_after_its_connection_was_killed(gunicorn: str) -> None:
    user = UserFactory(username="failover-user", roles=["requesters"])
    token = Token.objects.create(user=user).key

    assert _accounts(gunicorn, token)[0] == 200
    assert _kill_other_backends() >= 1  # gunicorn's kept connection, at least

    status, body = _accounts(gunicorn, token)
    assert status == 200 and body["results"] == []
    # Failover after failover: every answer is a 200 (urlopen raises on a 500).
    for _ in range(5):
        assert _kill_other_backends() >= 1
        assert _accounts(gunicorn, token)[0] == 200


def test_psycopg_sees_the_killed_connection_as_broken() -> None:
    """The premise: a terminated backend's connection fails on its next use."""
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    ) as victim:
        pid = victim.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
