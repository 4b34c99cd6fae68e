"""The web half of the permission matrix: every page and form action against every role.

Roles: anonymous (sent to the login page), the account's owner (a requester), another
requester (404: no hint that the account exists), a logged-in user with no role, an
approver and an admin. POSTs also need their CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts_app.models import ExtensionRequest
from pipelines.models import LogLine
from tests.factories import (
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db  # the database only: no worker, Terraform or moto


LOGIN = "login"  # expected: a redirect to the login page
OK = 200  # a page (a finished run's live parts answer 286, htmx's "stop polling")
DONE = 302  # a form action that worked and redirected
ROLES = ("anon", "owner", "other", "nobody", "approver", "admin")


@dataclass
class World:
    users: dict[str, Any]
    urls: dict[str, str]


@pytest.fixture
def world() -> World:
    owner = UserFactory(username="owner", roles=["requesters"])
    users = {
        "owner": owner,
        "other": UserFactory(username="other", roles=["requesters"]),
        "nobody": UserFactory(username="nobody"),
        "approver": UserFactory(username="approver", roles=["approvers"]),
        "admin": UserFactory(username="admin", roles=["admins"]),
    }
    requested = AccountFactory(name="asked", owner=owner, status="requested")
    req = AccountRequestFactory(account=requested)

    ready = AccountFactory(name="ready", owner=owner, status="failed")
    failed_run = PipelineRunFactory(account=ready, status="failed", explanation="boom")
    failed = StageRunFactory(run=failed_run, position=1, status="failed", explanation="boom")
    LogLine.objects.create(stage=failed, attempt=1, number=1, time=timezone.now(), text="x")

    busy = AccountFactory(name="busy", owner=owner, status="provisioning")
    active_run = PipelineRunFactory(account=busy, status="running")
    StageRunFactory(run=active_run, position=1, status="running", started_at=timezone.now())

    waiting_account = AccountFactory(name="waiting", owner=owner, status="provisioning")
    waiting_run = PipelineRunFactory(account=waiting_account, status="waiting_approval")
    waiting = StageRunFactory(
        run=waiting_run, position=1, kind="approve_plan", status="waiting_approval"
    )

    extension = ExtensionRequest.objects.create(
        account=ready, requested_by=owner, expires_at=timezone.now() + timedelta(days=90)
    )

    urls = {
        "dashboard": reverse("dashboard"),
        "request-pick": reverse("request-pick"),
        "request-form": reverse("request-form", args=["sandbox"]),
        "approvals": reverse("approvals"),
        "account-detail": reverse("account-detail", args=[ready.pk]),
        "run-detail": reverse("run-detail", args=[failed_run.pk]),
        "run-live": reverse("run-live", args=[failed_run.pk]),
        "stage-log": reverse("stage-log", args=[failed_run.pk, failed.pk]),
        "request-approve": reverse("request-approve", args=[req.pk]),
        "request-reject": reverse("request-reject", args=[req.pk]),
        "account-start-run": reverse("account-start-run", args=[ready.pk]),
        "stage-retry": reverse("stage-retry", args=[failed_run.pk, failed.pk]),
        "run-cancel": reverse("run-cancel", args=[active_run.pk]),
        "run-list": reverse("run-list"),
        "request-withdraw": reverse("request-withdraw", args=[req.pk]),
        "request-resubmit": reverse("request-resubmit", args=[req.pk]),
        "run-resume": reverse("run-resume", args=[failed_run.pk]),
        "stage-approve": reverse("stage-approve", args=[waiting_run.pk, waiting.pk]),
        "stage-reject": reverse("stage-reject", args=[waiting_run.pk, waiting.pk]),
        "account-edit": reverse("account-edit", args=[ready.pk]),
        "account-upgrade": reverse("account-upgrade", args=[ready.pk]),
        "blueprint-upgrade": reverse("blueprint-upgrade", args=["sandbox"]),
        "account-extend": reverse("account-extend", args=[ready.pk]),
        "account-exempt": reverse("account-exempt", args=[ready.pk]),
        "account-drift-check": reverse("account-drift-check", args=[ready.pk]),
        "account-reconcile": reverse("account-reconcile", args=[ready.pk]),
        "extension-approve": reverse("extension-approve", args=[extension.pk]),
        "extension-reject": reverse("extension-reject", args=[extension.pk]),
    }
    return World(users=users, urls=urls)


def row(anon: Any, owner: Any, other: Any, nobody: Any, approver: Any, admin: Any) -> dict:
    return dict(zip(ROLES, (anon, owner, other, nobody, approver, admin), strict=True))


# url name -> (method, POST data, expected status per role)
MATRIX: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "dashboard": ("get", {}, row(LOGIN, OK, OK, OK, OK, OK)),
    "request-pick": ("get", {}, row(LOGIN, OK, OK, 403, OK, OK)),
    "request-form": ("get", {}, row(LOGIN, OK, OK, 403, OK, OK)),
    "approvals": ("get", {}, row(LOGIN, 403, 403, 403, OK, OK)),
    "account-detail": ("get", {}, row(LOGIN, OK, 404, 404, OK, OK)),
    "run-detail": ("get", {}, row(LOGIN, OK, 404, 404, OK, OK)),
    "run-live": ("get", {}, row(LOGIN, 286, 404, 404, 286, 286)),
    "stage-log": ("get", {}, row(LOGIN, OK, 404, 404, OK, OK)),
    "request-approve": ("post", {}, row(LOGIN, 403, 404, 404, DONE, DONE)),
    "request-reject": ("post", {"comment": "no"}, row(LOGIN, 403, 404, 404, DONE, DONE)),
    "account-start-run": ("post", {"kind": "update"}, row(LOGIN, DONE, 404, 404, 403, DONE)),
    "stage-retry": ("post", {}, row(LOGIN, 403, 404, 404, 403, DONE)),
    "run-cancel": ("post", {}, row(LOGIN, 403, 404, 404, 403, DONE)),
    "run-list": ("get", {}, row(LOGIN, OK, OK, OK, OK, OK)),
    "request-withdraw": ("post", {}, row(LOGIN, DONE, 404, 404, 403, 403)),
    "request-resubmit": ("post", {}, row(LOGIN, DONE, 404, 404, 403, 403)),
    "run-resume": ("post", {}, row(LOGIN, 403, 404, 404, 403, DONE)),
    "stage-approve": ("post", {}, row(LOGIN, 403, 404, 404, DONE, DONE)),
    "stage-reject": ("post", {"comment": "no"}, row(LOGIN, 403, 404, 404, DONE, DONE)),
    "account-edit": ("get", {}, row(LOGIN, OK, 404, 404, 403, OK)),
    # At its blueprint's version: the page sends whoever may upgrade back to the account.
    "account-upgrade": ("get", {}, row(LOGIN, DONE, 404, 404, 403, DONE)),
    "blueprint-upgrade": ("get", {}, row(LOGIN, 403, 403, 403, 403, OK)),
    "account-extend": (
        "post",
        {"expires_on": "2099-01-01"},
        row(LOGIN, DONE, 404, 404, 403, DONE),
    ),
    "account-exempt": ("post", {"exempt": "1"}, row(LOGIN, 403, 404, 404, 403, DONE)),
    "account-drift-check": ("post", {}, row(LOGIN, DONE, 404, 404, 403, DONE)),
    "account-reconcile": ("post", {}, row(LOGIN, DONE, 404, 404, 403, DONE)),
    "extension-approve": ("post", {}, row(LOGIN, 403, 404, 404, DONE, DONE)),
    "extension-reject": ("post", {"comment": "no"}, row(LOGIN, 403, 404, 404, DONE, DONE)),
}
CASES = [(name, role) for name in MATRIX for role in ROLES]


@pytest.mark.parametrize(("name", "role"), CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_permission_matrix(world: World, name: str, role: str) -> None:
    method, data, expected_by_role = MATRIX[name]
    expected = expected_by_role[role]
    client = Client()
    if role != "anon":
        client.force_login(world.users[role])
    url = world.urls[name]

    response = client.post(url, data) if method == "post" else client.get(url)

    if expected == LOGIN:
        assert response.status_code == 302, response.status_code
        assert response["Location"].startswith(reverse("login") + "?next=")
    else:
        assert response.status_code == expected, (name, role, response.status_code)
        if expected == DONE:
            assert not response["Location"].startswith(reverse("login"))


POST_ONLY = [name for name, (method, _, _) in MATRIX.items() if method == "post"]


@pytest.mark.parametrize("name", POST_ONLY)
def test_form_actions_refuse_get(world: World, name: str) -> None:
    client = Client()
    client.force_login(world.users["admin"])
    assert client.get(world.urls[name]).status_code == 405


@pytest.mark.parametrize(
    "name", [*POST_ONLY, "request-form", "account-edit", "account-upgrade", "blueprint-upgrade"]
)
def test_form_actions_need_the_csrf_token(world: World, name: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["admin"])
    assert client.post(world.urls[name], {"comment": "x"}).status_code == 403


def test_logout_needs_post_and_csrf(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["owner"])
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 403
    assert client.get(reverse("dashboard")).status_code == 200


def test_a_protected_account_cannot_be_run_by_its_owner(world: World) -> None:
    owner = world.users["owner"]
    protected = AccountFactory(name="prod", owner=owner, status="ready", protected=True)
    client = Client()
    client.force_login(owner)

    page = client.get(reverse("account-detail", args=[protected.pk])).content.decode()
    response = client.post(reverse("account-start-run", args=[protected.pk]), {"kind": "update"})

    assert reverse("account-start-run", args=[protected.pk]) not in page
    assert response.status_code == 403
