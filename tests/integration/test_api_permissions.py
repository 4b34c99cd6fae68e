"""The API half of the permission matrix: every endpoint against every kind of caller.

Callers: anonymous, the owner (a requester, on her own objects), another
requester (someone else's objects: 404, never a hint they exist), an approver
and an admin. Each case starts from the same fresh world.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts_app.models import AccountStatus, ExtensionRequest, RequestStatus
from pipelines.models import RunStatus, StageStatus
from tests.factories import (
    SANDBOX_CONFIG,
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db  # the database only: no worker, Terraform or moto

API = "/api/v1/"
CALLERS = ("anonymous", "owner", "other", "approver", "admin")


@dataclass
class World:
    users: dict[str, Any]
    ids: dict[str, int]


@pytest.fixture
def world() -> World:
    owner = UserFactory(username="sally", roles=["requesters"])
    users = {
        "owner": owner,
        "other": UserFactory(username="otto", roles=["requesters"]),
        "approver": UserFactory(username="april", roles=["approvers"]),
        "admin": UserFactory(username="adam", roles=["admins"]),
    }
    # A ready account whose last run failed at its plan stage.
    account = AccountFactory(owner=owner, status=AccountStatus.FAILED, name="sally-qa")
    failed_run = PipelineRunFactory(account=account, status=RunStatus.FAILED)
    StageRunFactory(run=failed_run, position=1, kind="render")
    failed_stage = StageRunFactory(
        run=failed_run, position=2, kind="plan", status=StageStatus.FAILED
    )
    # An account whose run waits for its plan to be approved.
    live = AccountFactory(owner=owner, status=AccountStatus.PROVISIONING, name="sally-live")
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
    StageRunFactory(run=live_run, position=3, kind="apply", status=StageStatus.PENDING, attempt=0)
    # A pending request, and a protected (production) account.
    pending = AccountFactory(owner=owner, status=AccountStatus.REQUESTED, name="sally-pending")
    request = AccountRequestFactory(account=pending, status=RequestStatus.PENDING)
    protected = AccountFactory(
        owner=owner, status=AccountStatus.READY, name="sally-prod", protected=True
    )
    # An extension beyond its policy's limit, waiting for an approver.
    extension = ExtensionRequest.objects.create(
        account=account, requested_by=owner, expires_at=timezone.now() + timedelta(days=90)
    )
    return World(
        users=users,
        ids={
            "account": account.pk,
            "run": failed_run.pk,
            "stage": failed_stage.pk,
            "live_run": live_run.pk,
            "waiting": waiting.pk,
            "request": request.pk,
            "protected": protected.pk,
            "extension": extension.pk,
        },
    )


def new_request(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "blueprint": "sandbox",
        "purpose": "demo",
        "config": dict(SANDBOX_CONFIG),
    }


# (label, method, url template, body, expected: anonymous, owner, other, approver, admin)
MATRIX: list[tuple[str, str, str, Any, tuple[int, int, int, int, int]]] = [
    ("blueprints list", "get", "blueprints/", None, (401, 200, 200, 200, 200)),
    ("blueprint detail", "get", "blueprints/sandbox/", None, (401, 200, 200, 200, 200)),
    (
        "blueprint render",
        "post",
        "blueprints/sandbox/render/",
        {"config": SANDBOX_CONFIG},
        (401, 200, 200, 200, 200),
    ),
    ("accounts list", "get", "accounts/", None, (401, 200, 200, 200, 200)),
    ("account request", "post", "accounts/", new_request("new-one"), (401, 201, 201, 201, 201)),
    ("account detail", "get", "accounts/{account}/", None, (401, 200, 404, 200, 200)),
    (
        "start run",
        "post",
        "accounts/{account}/runs/",
        {"kind": "update"},
        (401, 201, 404, 403, 201),
    ),
    (
        "start run, protected account",
        "post",
        "accounts/{protected}/runs/",
        {"kind": "update"},
        # Admins may; the engine still never writes to production (409).
        (401, 403, 404, 403, 409),
    ),
    (
        "register production",
        "post",
        "accounts/",
        {"name": "prod", "blueprint": "sandbox", "purpose": "production", "config": SANDBOX_CONFIG},
        (401, 403, 403, 403, 201),
    ),
    (
        "account extend",
        "post",
        "accounts/{account}/extend/",
        {"expires_at": "2099-01-01T00:00:00Z"},
        # Beyond the limit: a request for an approver (202); another is waiting (409).
        (401, 409, 404, 403, 409),
    ),
    (
        "account exempt",
        "post",
        "accounts/{account}/exempt/",
        {"exempt": True},
        (401, 403, 404, 403, 200),
    ),
    ("account drift", "get", "accounts/{account}/drift/", None, (401, 200, 404, 200, 200)),
    # A failed account is not checked for drift (409); nor is one reconciled without drift.
    ("drift check", "post", "accounts/{account}/drift/", None, (401, 409, 404, 403, 409)),
    ("reconcile", "post", "accounts/{account}/reconcile/", None, (401, 409, 404, 403, 409)),
    ("extensions list", "get", "extensions/", None, (401, 200, 200, 200, 200)),
    (
        "extension approve",
        "post",
        "extensions/{extension}/approve/",
        {"comment": "ok"},
        (401, 403, 404, 200, 200),
    ),
    (
        "extension reject",
        "post",
        "extensions/{extension}/reject/",
        {"comment": "no"},
        (401, 403, 404, 200, 200),
    ),
    # Whoever sees the account gets its report; here its production is not registered (409).
    ("account parity", "get", "accounts/{account}/parity/", None, (401, 409, 404, 409, 409)),
    (
        "account edit",
        "patch",
        "accounts/{account}/",
        {"config": dict(SANDBOX_CONFIG)},
        (401, 201, 404, 403, 201),
    ),
    (
        "account edit, protected account",
        "patch",
        "accounts/{protected}/",
        {"config": dict(SANDBOX_CONFIG)},
        # Admins may; the engine still never writes to a protected account (409).
        (401, 403, 404, 403, 409),
    ),
    ("account diff", "get", "accounts/{account}/diff/", None, (401, 200, 404, 403, 200)),
    # Whoever may edit may upgrade; here the account is at its blueprint's version (409).
    ("account upgrade", "post", "accounts/{account}/upgrade/", None, (401, 409, 404, 403, 409)),
    ("upgrade all", "post", "blueprints/sandbox/upgrade/", None, (401, 403, 403, 403, 200)),
    ("run detail", "get", "runs/{run}/", None, (401, 200, 404, 200, 200)),
    ("stage log", "get", "runs/{run}/stages/{stage}/log/", None, (401, 200, 404, 200, 200)),
    ("stage retry", "post", "runs/{run}/stages/{stage}/retry/", None, (401, 403, 404, 403, 200)),
    ("run cancel", "post", "runs/{live_run}/cancel/", None, (401, 403, 404, 403, 200)),
    # Everyone lists the runs they may see; the failed run resumes by a retry, not here (409).
    ("runs list", "get", "runs/", None, (401, 200, 200, 200, 200)),
    # Only the requester withdraws or sends again her request; a pending one is not resent.
    ("request withdraw", "post", "requests/{request}/withdraw/", None, (401, 200, 404, 403, 403)),
    ("request resubmit", "post", "requests/{request}/resubmit/", {}, (401, 409, 404, 403, 403)),
    ("run resume", "post", "runs/{run}/resume/", None, (401, 403, 404, 403, 409)),
    ("requests list", "get", "requests/", None, (401, 200, 200, 200, 200)),
    ("request create", "post", "requests/", new_request("new-two"), (401, 201, 201, 201, 201)),
    (
        "request approve",
        "post",
        "requests/{request}/approve/",
        {"comment": "ok"},
        (401, 403, 404, 200, 200),
    ),
    (
        "request reject",
        "post",
        "requests/{request}/reject/",
        {"comment": "no"},
        (401, 403, 404, 200, 200),
    ),
    (
        "plan approve",
        "post",
        "runs/{live_run}/stages/{waiting}/approve/",
        {"comment": "ok"},
        (401, 403, 404, 200, 200),
    ),
    (
        "plan reject",
        "post",
        "runs/{live_run}/stages/{waiting}/reject/",
        {"comment": "no"},
        (401, 403, 404, 200, 200),
    ),
]

CASES = [
    pytest.param(method, url, body, caller, expected[index], id=f"{label}-{caller}")
    for label, method, url, body, expected in MATRIX
    for index, caller in enumerate(CALLERS)
]


@pytest.mark.parametrize(("method", "url", "body", "caller", "expected"), CASES)
def test_api_permission_matrix(
    world: World, method: str, url: str, body: Any, caller: str, expected: int
) -> None:
    client = APIClient()
    if caller != "anonymous":
        token, _ = Token.objects.get_or_create(user=world.users[caller])
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    answer = getattr(client, method)(f"{API}{url.format(**world.ids)}", body, format="json")
    assert answer.status_code == expected, answer.content


def test_every_api_route_is_in_the_matrix() -> None:
    """A new endpoint without a row here fails this test."""
    from django.urls import get_resolver

    from accounts_app.api import urls as api_urls

    routes = {
        str(pattern.pattern) for pattern in api_urls.urlpatterns if pattern.name != "not-found"
    }
    covered = {
        url.replace("{account}", "<int:account_id>")
        .replace("{protected}", "<int:account_id>")
        .replace("{run}", "<int:run_id>")
        .replace("{live_run}", "<int:run_id>")
        .replace("{stage}", "<int:stage_id>")
        .replace("{waiting}", "<int:stage_id>")
        .replace("{request}", "<int:request_id>")
        .replace("{extension}", "<int:extension_id>")
        .replace("blueprints/sandbox/", "blueprints/<str:name>/")
        for _, _, url, _, _ in MATRIX
    }
    assert routes == covered
    assert get_resolver().resolve("/api/v1/accounts/").func.view_class.__name__ == (
        "AccountListView"
    )
