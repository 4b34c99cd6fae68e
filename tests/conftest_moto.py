"""pytest plugin: a real moto server for integration tests that talk to "AWS".

Registered from tests/conftest.py (``pytest_plugins = ["tests.conftest_moto"]``)
or on the command line with ``-p tests.conftest_moto``.

The server is moto's ``ThreadedMotoServer``: a real HTTP endpoint running in
this process, so boto3 goes through its whole stack (signing, serialisation,
retries) exactly as against AWS. Its state lives in moto's global backends
for the whole session: tests use unique names instead of resetting it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from moto.rds.models import DBSnapshot, RDSBackend, rds_backends
from moto.rds.utils import split_arn
from moto.server import ThreadedMotoServer

# Dummy credentials, never real ones: moto accepts any, AWS would refuse these.
_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Keep a developer's own AWS configuration out of the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "MOTO_ACCOUNT_ID")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start moto on 127.0.0.1 (a free port); yield its endpoint URL.

    While it runs, AWS_ENDPOINT_URL points boto3 (and pipelines.clients.aws)
    at it and the AWS credentials in the environment are dummies.
    """
    # One INFO line per request from werkzeug drowns the test output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in _UNSET:
            mp.delenv(name, raising=False)
        for name, value in _DUMMY_ENV.items():
            mp.setenv(name, value)
        mp.setenv("AWS_ENDPOINT_URL", url)
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture()
def shared_snapshot_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test-only shim for one moto gap (moto 5.2.5); real AWS needs no such thing.

    moto lists a snapshot shared by account A in account B
    (``describe_db_snapshots(SnapshotType="shared")``), but B's
    ``copy_db_snapshot`` with A's snapshot ARN fails with DBSnapshotNotFound:
    ``RDSBackend.get_snapshot`` takes region and name from the ARN and drops
    its account, so it looks in the caller's own account. The shim makes an
    ARN of another account resolve in that account, and only when the
    snapshot is shared with the caller (or public), as in AWS. Everything else
    (the HTTP call, moto's copy logic, our code) runs unchanged, which is why
    a backend shim is preferred over botocore's Stubber for that one call.
    ThreadedMotoServer serves from this process, so patching the class here
    patches the server. ``test_moto_gap_still_exists`` (test_rds_clone.py) fails once moto fixes
    the gap, the signal to delete this shim.
    """
    original = RDSBackend.get_snapshot

    def get_snapshot(
        self: RDSBackend, identifier: str, resource_type: Any, not_found_exception: Any
    ) -> Any:
        if identifier.startswith("arn:") and resource_type is DBSnapshot:
            region, account, _, name = split_arn(identifier)
            if account != self.account_id:
                owner = rds_backends[account][region]
                snapshot = owner.database_snapshots.get(name)
                shared_with = set(snapshot.attributes["restore"]) if snapshot else set()
                if snapshot is None or not shared_with & {self.account_id, "all"}:
                    raise not_found_exception(identifier)
                return snapshot
        return original(self, identifier, resource_type, not_found_exception)

    monkeypatch.setattr(RDSBackend, "get_snapshot", get_snapshot)
