"""The OpenAPI schema is the contract: it is valid, and no request it allows gets a 500.

Schemathesis generates requests from /api/schema/ and sends them over HTTP to a
live server (pytest-django's ``live_server``), as an admin and as a requester.
Half of the cases aim their path ids at real objects, so the handlers do real
work rather than answering 404. Bounded: a few examples per operation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts_app.models import AccountStatus, RequestStatus
from pipelines.models import LogLine, RunStatus, StageStatus
from tests.factories import (
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
    UserFactory,
)

EXAMPLES_PER_OPERATION = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_the_schema_is_valid_openapi(live_server: Any) -> None:
    answer = requests.get(f"{live_server.url}/api/schema/?format=json", timeout=30)
    assert answer.status_code == 200
    schema = answer.json()
    validate(schema)  # raises on an invalid OpenAPI document
    paths = set(schema["paths"])
    assert "/api/v1/accounts/" in paths and "/api/v1/runs/{run_id}/stages/{stage_id}/log/" in paths
    operations = [(m, p) for p, item in schema["paths"].items() for m in item if m != "parameters"]
    assert len(operations) == 34, operations
    # Inputs and outputs are described, not left as free-form objects.
    created = schema["paths"]["/api/v1/accounts/"]["post"]
    assert "201" in created["responses"] and "requestBody" in created
    docs = requests.get(f"{live_server.url}/api/docs/", timeout=30)
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def _generated_schema() -> dict[str, Any]:
    """The schema /api/schema/ serves, generated in-process (no server needed to collect)."""
    from drf_spectacular.generators import SchemaGenerator

    document: dict[str, Any] = SchemaGenerator().get_schema(request=None, public=True)
    # Round-trip through JSON, as a client would see it (lazy strings, enums...).
    return json.loads(OpenApiJsonRenderer().render(document))


# Requests the schema allows (positive mode), a bounded number per operation.
CONFIG = schemathesis.Config.from_dict(
    {
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "generation": {"mode": "positive", "max-examples": EXAMPLES_PER_OPERATION},
    }
)
schema = schemathesis.openapi.from_dict(_generated_schema(), config=CONFIG)


@dataclass
class FuzzWorld:
    base_url: str
    tokens: dict[str, str]
    ids: dict[str, Any]


@pytest.fixture
def fuzz_world(live_server: Any) -> Iterator[FuzzWorld]:
    owner = UserFactory(username="sally", roles=["requesters"])
    admin = UserFactory(username="adam", roles=["admins"])
    account = AccountFactory(owner=owner, status=AccountStatus.FAILED)
    run = PipelineRunFactory(account=account, status=RunStatus.FAILED)
    stage = StageRunFactory(run=run, position=1, kind="render", status=StageStatus.FAILED)
    LogLine.objects.create(stage=stage, attempt=1, number=1, time=run.created_at, text="hello")
    live = AccountFactory(owner=owner, status=AccountStatus.PROVISIONING)
    live_run = PipelineRunFactory(account=live, status=RunStatus.WAITING_APPROVAL)
    StageRunFactory(
        run=live_run,
        position=1,
        kind="plan",
        outputs={"add": 1, "change": 0, "replace": 0, "destroy": 1},
    )
    waiting = StageRunFactory(
        run=live_run, position=2, kind="approve_plan", status=StageStatus.WAITING_APPROVAL
    )
    pending = AccountFactory(owner=owner, status=AccountStatus.REQUESTED)
    request = AccountRequestFactory(account=pending, status=RequestStatus.PENDING)
    yield FuzzWorld(
        base_url=live_server.url,
        tokens={
            "admin": Token.objects.create(user=admin).key,
            "requester": Token.objects.create(user=owner).key,
        },
        ids={
            "account_id": account.pk,
            "request_id": request.pk,
            "name": "sandbox",
            "run_id": run.pk,
            "stage_id": stage.pk,
            "live_run_id": live_run.pk,
            "waiting_id": waiting.pk,
        },
    )
    # Auto-approved requests sent stage tasks to the broker; nobody will run them.
    from portal.celery import app

    app.control.purge()


def aim_at_real_objects(case: Any, ids: dict[str, Any]) -> None:
    """Point about half of the cases' path parameters at objects that exist."""
    params = case.path_parameters or {}
    if not params or hash(repr(sorted(params.items()))) % 2:
        return
    decides_plan = case.path.endswith(("/approve/", "/reject/")) and "stage_id" in params
    for key in params:
        if key == "run_id" and (decides_plan or case.path.endswith("/cancel/")):
            params[key] = ids["live_run_id"]
        elif key == "stage_id" and decides_plan:
            params[key] = ids["waiting_id"]
        elif key in ids:
            params[key] = ids[key]


HYPOTHESIS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,
)


@schema.parametrize()
@HYPOTHESIS
def test_no_request_the_schema_allows_gets_a_server_error(case: Any, fuzz_world: FuzzWorld) -> None:
    aim_at_real_objects(case, fuzz_world.ids)
    # The same request from both roles: one pytest test per operation keeps setup cheap.
    for who in ("requester", "admin"):
        case.call_and_validate(
            base_url=fuzz_world.base_url,
            headers={"Authorization": f"Token {fuzz_world.tokens[who]}"},
            checks=CHECKS,
            timeout=30,
        )
