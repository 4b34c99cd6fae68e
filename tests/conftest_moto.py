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

import pytest
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
