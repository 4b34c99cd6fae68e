"""The REST API end to end through DRF's client: shapes, errors, filters, queries."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts_app.models import Account, AccountRequest, AccountStatus, RequestStatus
from pipelines.models import LogLine, PipelineRun, RunStatus, StageRun, StageStatus
from tests.conftest import token_client
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


def request_body(name: str = "acme-demo", **overrides: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "blueprint": "sandbox",
        "purpose": "demo",
        "config": dict(SANDBOX_CONFIG),
        "reason": "demo for ACME",
    }
    body.update(overrides)
    return body


# --- blueprints -------------------------------------------------------------------------


def test_blueprints_list_and_detail(sally: Any) -> None:
    client = token_client(sally)
    listed = client.get(f"{API}blueprints/").json()
    names = [b["name"] for b in listed["results"]]
    assert "sandbox" in names and listed["count"] == len(names)
    sandbox = next(b for b in listed["results"] if b["name"] == "sandbox")
    assert sandbox["policy"]["demo"] == {
        "auto_approve": ["admins"],
        "default_ttl_days": 14,
        "max_ttl_days": 30,
        "max_active_per_user": 3,
    }
    assert "parameters" not in sandbox

    detail = client.get(f"{API}blueprints/sandbox/").json()
    assert detail["parameters"]["properties"]["cidr"]["default"] == "10.20.0.0/16"
    assert detail["stages"][:2] == ["pre_hooks", "render"]
    assert client.get(f"{API}blueprints/nope/").status_code == 404
    assert client.get(f"{API}blueprints/..%2f..%2fetc/").status_code == 404


def test_render_preview_returns_the_files_and_field_errors(sally: Any) -> None:
    client = token_client(sally)
    answer = client.post(
        f"{API}blueprints/sandbox/render/",
        {"config": {**SANDBOX_CONFIG, "cidr": "10.99.0.0/16"}, "name": "acme-demo"},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    files = answer.json()["files"]
    assert files and all(f["path"] and f["content"] for f in files)
    for rendered in files:
        assert rendered["sha256"] == hashlib.sha256(rendered["content"].encode()).hexdigest()
    assert any('"10.99.0.0/16"' in f["content"] for f in files)
    assert not Account.objects.exists()

    bad = client.post(
        f"{API}blueprints/sandbox/render/",
        {"config": {**SANDBOX_CONFIG, "cidr": "not-a-cidr"}},
        format="json",
    )
    assert bad.status_code == 400
    assert [m for m in bad.json()["config"] if m.startswith("$.cidr: ")], bad.json()

    missing = client.post(f"{API}blueprints/sandbox/render/", {}, format="json")
    assert missing.status_code == 400 and "config" in missing.json()


# --- requesting accounts ------------------------------------------------------------------


def test_post_accounts_answers_201_with_the_account_and_its_request(sally: Any) -> None:
    client = token_client(sally)
    answer = client.post(f"{API}accounts/", request_body(), format="json")
    assert answer.status_code == 201, answer.content
    data = answer.json()
    account = Account.objects.get(name="acme-demo")
    req = AccountRequest.objects.get(account=account)
    assert data["id"] == account.pk
    assert data["name"] == "acme-demo" and data["owner"] == "sally"
    assert data["status"] == "requested" and data["purpose"] == "demo"
    assert data["request"] == {"id": req.pk, "status": "pending"}
    assert data["run"] is None
    assert data["expires_at"] is not None

    detail = client.get(f"{API}accounts/{account.pk}/").json()
    assert detail["request"] == {"id": req.pk, "status": "pending"}
    assert detail["runs"] == [] and detail["latest_plan"] is None


def test_post_accounts_errors_are_per_field(sally: Any) -> None:
    client = token_client(sally)
    answer = client.post(
        f"{API}accounts/",
        request_body(
            name="X",
            expires_at=(timezone.now() + timedelta(days=400)).isoformat(),
            config={**SANDBOX_CONFIG, "cidr": "10.0.0.0/99"},
        ),
        format="json",
    )
    assert answer.status_code == 400
    errors = answer.json()
    assert set(errors) == {"name", "expires_at", "config"}, errors
    assert errors["config"][0].startswith("$.cidr: ")
    assert "at most 30 days" in errors["expires_at"][0]

    wrong_types = client.post(
        f"{API}accounts/", {"name": 3, "purpose": "holiday", "config": []}, format="json"
    )
    assert wrong_types.status_code == 400
    assert {"blueprint", "purpose", "config"} <= set(wrong_types.json())
    assert not Account.objects.exists()


def test_quota_refusal_names_the_numbers(sally: Any) -> None:
    for _ in range(3):
        AccountFactory(owner=sally, purpose="demo", status=AccountStatus.READY)
    answer = token_client(sally).post(f"{API}accounts/", request_body(), format="json")
    assert answer.status_code == 400
    assert "3 in use, limit 3" in answer.json()["purpose"][0]


def test_an_admin_request_is_auto_approved_and_its_run_listed(adam: Any) -> None:
    client = token_client(adam)
    answer = client.post(f"{API}accounts/", request_body(), format="json")
    assert answer.status_code == 201, answer.content
    data = answer.json()
    run = PipelineRun.objects.get(account_id=data["id"])
    assert data["request"]["status"] == "auto_approved"
    assert data["run"] == run.pk and data["status"] == "provisioning"

    detail = client.get(f"{API}accounts/{data['id']}/").json()
    assert [r["id"] for r in detail["runs"]] == [run.pk]
    assert detail["runs"][0]["kind"] == "provision"


def test_requests_endpoint_lists_creates_and_decides(sally: Any, april: Any) -> None:
    mine = token_client(sally)
    created = mine.post(f"{API}requests/", request_body(), format="json")
    assert created.status_code == 201, created.content
    req_id = created.json()["id"]
    assert created.json()["status"] == "pending"
    assert created.json()["account"]["name"] == "acme-demo"
    other = mine.post(f"{API}requests/", request_body("acme-two"), format="json").json()["id"]

    approver = token_client(april)
    pending = approver.get(f"{API}requests/?status=pending").json()
    assert {r["id"] for r in pending["results"]} == {req_id, other}

    approved = approver.post(f"{API}requests/{req_id}/approve/", {"comment": "ok"}, format="json")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "approved" and approved.json()["decided_by"] == "april"
    assert approved.json()["run"] == PipelineRun.objects.get(account__name="acme-demo").pk
    again = approver.post(f"{API}requests/{req_id}/approve/", {}, format="json")
    assert again.status_code == 409 and "already approved" in again.json()["detail"]

    no_comment = approver.post(f"{API}requests/{other}/reject/", {}, format="json")
    assert no_comment.status_code == 400 and "comment" in no_comment.json()
    rejected = approver.post(
        f"{API}requests/{other}/reject/", {"comment": "one is enough"}, format="json"
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["account"]["status"] == "rejected"

    assert {r["status"] for r in mine.get(f"{API}requests/").json()["results"]} == {
        "approved",
        "rejected",
    }


# --- accounts: detail, filters ------------------------------------------------------------


def test_account_detail_hides_sensitive_outputs_and_shows_the_latest_plan(sally: Any) -> None:
    account = AccountFactory(
        owner=sally,
        status=AccountStatus.READY,
        outputs={
            "vpc_id": {"value": "vpc-123", "sensitive": False, "type": "string"},
            "db_password": {"value": "hunter2-secret", "sensitive": True, "type": "string"},
        },
        endpoints={"orders": {"host": "orders.acme.internal", "port": 5432}},
    )
    old = PipelineRunFactory(account=account)
    new = PipelineRunFactory(account=account, kind="update")
    PipelineRun.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    StageRunFactory(
        run=old,
        kind="plan",
        finished_at=timezone.now() - timedelta(hours=2),
        outputs={"add": 5, "change": 0, "replace": 0, "destroy": 0, "has_changes": True},
    )
    StageRunFactory(
        run=new,
        kind="plan",
        finished_at=timezone.now(),
        outputs={
            "add": 0,
            "change": 1,
            "replace": 0,
            "destroy": 2,
            "has_changes": True,
            "resources": [{"address": "terraform_data.db", "action": "delete"}],
            "workdir": "/var/work/secret-path",
        },
    )
    answer = token_client(sally).get(f"{API}accounts/{account.pk}/")
    assert answer.status_code == 200
    data = answer.json()
    assert data["outputs"]["vpc_id"] == {"value": "vpc-123", "sensitive": False, "type": "string"}
    assert data["outputs"]["db_password"] == {"value": None, "sensitive": True, "type": "string"}
    assert b"hunter2-secret" not in answer.content
    assert data["endpoints"]["orders"]["host"] == "orders.acme.internal"
    assert [r["id"] for r in data["runs"]] == [new.pk, old.pk]
    plan = data["latest_plan"]
    assert plan["run"] == new.pk and (plan["add"], plan["change"], plan["destroy"]) == (0, 1, 2)
    assert plan["resources"] == [{"address": "terraform_data.db", "action": "delete"}]
    assert "workdir" not in plan


def test_lists_filter_and_paginate(sally: Any, april: Any) -> None:
    otto = UserFactory(username="otto", roles=["requesters"])
    AccountFactory(owner=sally, purpose="demo", status=AccountStatus.READY, name="s-ready")
    AccountFactory(owner=sally, purpose="qa", status=AccountStatus.FAILED, name="s-failed")
    AccountFactory(owner=otto, purpose="demo", status=AccountStatus.READY, name="o-ready")

    def names(client: APIClient, query: str = "") -> list[str]:
        answer = client.get(f"{API}accounts/{query}")
        assert answer.status_code == 200, answer.content
        return [a["name"] for a in answer.json()["results"]]

    approver = token_client(april)
    assert names(approver) == ["o-ready", "s-failed", "s-ready"]
    assert names(approver, "?status=ready") == ["o-ready", "s-ready"]
    assert names(approver, "?purpose=qa") == ["s-failed"]
    assert names(approver, "?owner=otto") == ["o-ready"]
    assert names(approver, "?status=ready&owner=sally") == ["s-ready"]
    # Requesters only ever see their own.
    assert names(token_client(sally)) == ["s-failed", "s-ready"]
    assert names(token_client(sally), "?owner=otto") == []

    page = approver.get(f"{API}accounts/?limit=2&offset=1").json()
    assert page["count"] == 3 and [a["name"] for a in page["results"]] == ["s-failed", "s-ready"]
    bad = approver.get(f"{API}accounts/?status=happy")
    assert bad.status_code == 400 and "status" in bad.json()


# --- runs ------------------------------------------------------------------------------------


def test_start_a_run_and_the_conflict_names_the_holder(sally: Any) -> None:
    account = AccountFactory(owner=sally, status=AccountStatus.READY)
    client = token_client(sally)
    started = client.post(f"{API}accounts/{account.pk}/runs/", {"kind": "update"}, format="json")
    assert started.status_code == 201, started.content
    run = started.json()
    assert run["kind"] == "update" and run["status"] == "running"
    assert [s["kind"] for s in run["stages"]][:2] == ["pre_hooks", "render"]
    assert run["stages"][0]["status"] == "queued" and run["stages"][0]["attempt"] == 1

    again = client.post(f"{API}accounts/{account.pk}/runs/", {"kind": "provision"}, format="json")
    assert again.status_code == 409
    assert again.json()["holder"] == run["id"] and f"run #{run['id']}" in again.json()["detail"]

    bad_kind = client.post(f"{API}accounts/{account.pk}/runs/", {"kind": "nuke"}, format="json")
    assert bad_kind.status_code == 400 and "kind" in bad_kind.json()


def test_a_pending_account_cannot_be_run_around_its_approval(sally: Any) -> None:
    created = token_client(sally).post(f"{API}accounts/", request_body(), format="json").json()
    answer = token_client(sally).post(
        f"{API}accounts/{created['id']}/runs/", {"kind": "provision"}, format="json"
    )
    assert answer.status_code == 409 and "approved" in answer.json()["detail"]
    assert not PipelineRun.objects.exists()


def test_run_detail_has_every_stage_field(sally: Any) -> None:
    run = PipelineRunFactory(
        account__owner=sally, status=RunStatus.FAILED, explanation="plan: boom"
    )
    started = timezone.now() - timedelta(minutes=3)
    StageRunFactory(
        run=run,
        position=1,
        kind="render",
        started_at=started,
        finished_at=started,
        outputs={"files": 3},
    )
    StageRunFactory(
        run=run, position=2, kind="plan", status=StageStatus.FAILED, attempt=2, explanation="boom"
    )
    data = token_client(sally).get(f"{API}runs/{run.pk}/").json()
    assert (
        data["id"] == run.pk and data["status"] == "failed" and data["explanation"] == "plan: boom"
    )
    first, second = data["stages"]
    assert set(first) >= {
        "id",
        "kind",
        "position",
        "status",
        "attempt",
        "started_at",
        "finished_at",
        "explanation",
        "outputs",
    }
    assert first["outputs"] == {"files": 3} and first["position"] == 1
    assert second["status"] == "failed" and second["attempt"] == 2


def _lines(stage: StageRun, count: int, start: int = 1) -> None:
    now = timezone.now()
    LogLine.objects.bulk_create(
        LogLine(stage=stage, attempt=1, number=n, time=now, text=f"line {n}")
        for n in range(start, start + count)
    )


def test_log_follows_lines_after_n_and_says_when_finished(sally: Any) -> None:
    run = PipelineRunFactory(account__owner=sally, status=RunStatus.RUNNING)
    stage = StageRunFactory(run=run, status=StageStatus.RUNNING)
    _lines(stage, 3)
    client = token_client(sally)
    url = f"{API}runs/{run.pk}/stages/{stage.pk}/log/"

    first = client.get(url).json()
    assert [line["number"] for line in first["lines"]] == [1, 2, 3]
    assert first["lines"][0]["text"] == "line 1" and first["lines"][0]["time"]
    assert first["next"] == 3 and first["finished"] is False

    empty = client.get(f"{url}?after=3").json()
    assert empty == {"lines": [], "next": 3, "finished": False}

    _lines(stage, 600, start=4)
    StageRun.objects.filter(pk=stage.pk).update(status=StageStatus.SUCCEEDED)
    page = client.get(f"{url}?after=3").json()
    assert len(page["lines"]) == 500 and page["next"] == 503
    assert page["finished"] is False, "more lines wait after this page"
    rest = client.get(f"{url}?after=503").json()
    assert rest["next"] == 603 and rest["finished"] is True

    assert client.get(f"{url}?after=-1").status_code == 400
    assert client.get(f"{url}?after=abc").status_code == 400
    other_run = PipelineRunFactory(account__owner=sally)
    assert client.get(f"{API}runs/{other_run.pk}/stages/{stage.pk}/log/").status_code == 404


def test_admin_retries_a_failed_stage_and_cancels_a_run(adam: Any, sally: Any) -> None:
    account = AccountFactory(owner=sally, status=AccountStatus.FAILED)
    run = PipelineRunFactory(account=account, status=RunStatus.FAILED, explanation="plan: boom")
    StageRunFactory(run=run, position=1, kind="render")
    failed = StageRunFactory(run=run, position=2, kind="plan", status=StageStatus.FAILED)
    client = token_client(adam)

    retried = client.post(f"{API}runs/{run.pk}/stages/{failed.pk}/retry/")
    assert retried.status_code == 200, retried.content
    assert retried.json()["status"] == "running"
    assert retried.json()["stages"][1]["status"] == "queued"
    assert retried.json()["stages"][1]["attempt"] == 2
    again = client.post(f"{API}runs/{run.pk}/stages/{failed.pk}/retry/")
    assert again.status_code == 409

    cancelled = client.post(f"{API}runs/{run.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"{API}runs/{run.pk}/cancel/").status_code == 409


def test_plans_are_approved_or_rejected_through_the_api(april: Any, sally: Any) -> None:
    account = AccountFactory(owner=sally, status=AccountStatus.PROVISIONING)
    run = PipelineRunFactory(account=account, status=RunStatus.WAITING_APPROVAL)
    StageRunFactory(
        run=run,
        position=1,
        kind="plan",
        outputs={"add": 1, "change": 0, "replace": 0, "destroy": 1},
    )
    waiting = StageRunFactory(
        run=run, position=2, kind="approve_plan", status=StageStatus.WAITING_APPROVAL
    )
    StageRunFactory(run=run, position=3, kind="apply", status=StageStatus.PENDING, attempt=0)
    client = token_client(april)
    url = f"{API}runs/{run.pk}/stages/{waiting.pk}/"

    assert client.post(f"{url}reject/", {}, format="json").status_code == 400
    approved = client.post(f"{url}approve/", {"comment": "looks right"}, format="json")
    assert approved.status_code == 200, approved.content
    stages = approved.json()["stages"]
    assert stages[1]["status"] == "succeeded" and stages[1]["outputs"]["by"] == "april"
    assert stages[2]["status"] == "queued"
    again = client.post(f"{url}reject/", {"comment": "no"}, format="json")
    assert again.status_code == 409 and "not waiting for approval" in again.json()["detail"]


def test_anonymous_callers_get_401(db: None) -> None:
    answer = APIClient().get(f"{API}accounts/")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"].startswith("Token")


def test_session_auth_works_too(sally: Any) -> None:
    client = APIClient()
    client.force_login(sally)
    assert client.get(f"{API}accounts/").status_code == 200


# --- N+1: list and detail endpoints run a constant number of queries ----------------------


def _queries(client: APIClient, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def _grow_accounts(owner: Any, count: int) -> Account:
    account = None
    for _ in range(count):
        account = AccountFactory(owner=owner, status=AccountStatus.READY)
        AccountRequestFactory(account=account, status=RequestStatus.APPROVED, decided_by=owner)
        run = PipelineRunFactory(account=account)
        for position in (1, 2):
            stage = StageRunFactory(run=run, position=position)
            _lines(stage, 3)
    assert account is not None
    return account


@pytest.mark.parametrize("who", ["april", "sally"])
def test_lists_run_a_constant_number_of_queries(
    who: str, sally: Any, april: Any, django_assert_max_num_queries: Any
) -> None:
    client = token_client(sally if who == "sally" else april)
    _grow_accounts(sally, 2)
    small = {url: _queries(client, url) for url in (f"{API}accounts/", f"{API}requests/")}
    _grow_accounts(sally, 15)
    for url, count in small.items():
        with django_assert_max_num_queries(count):
            answer = client.get(url)
        assert answer.json()["count"] == 17


def test_details_run_a_constant_number_of_queries(
    sally: Any, django_assert_max_num_queries: Any
) -> None:
    client = token_client(sally)

    def shape(runs: int, stages: int, lines: int) -> tuple[str, str, str]:
        account = AccountFactory(owner=sally, status=AccountStatus.READY)
        AccountRequestFactory(account=account)
        run = None
        for _ in range(runs):
            run = PipelineRunFactory(account=account)
            for position in range(1, stages + 1):
                stage = StageRunFactory(
                    run=run,
                    position=position,
                    kind="plan",
                    outputs={"add": 1, "change": 0, "destroy": 0},
                )
                _lines(stage, lines)
        assert run is not None
        first = run.stages.first()
        assert first is not None
        return (
            f"{API}accounts/{account.pk}/",
            f"{API}runs/{run.pk}/",
            f"{API}runs/{run.pk}/stages/{first.pk}/log/",
        )

    small = [(_queries(client, url), url) for url in shape(1, 1, 1)]
    large = shape(12, 8, 40)
    for (count, _), url in zip(small, large, strict=True):
        with django_assert_max_num_queries(count):
            assert client.get(url).status_code == 200


def test_nul_characters_in_config_are_a_field_error_not_a_crash(sally: Any) -> None:
    # PostgreSQL's jsonb refuses NUL; the request is refused with the path instead.
    answer = token_client(sally).post(
        f"{API}accounts/",
        request_body(blueprint="render-only", config={"label": "a\u0000b"}),
        format="json",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json() == {"config": ["$.label: must not contain NUL characters"]}


def test_unknown_api_urls_answer_json_404(sally: Any) -> None:
    answer = token_client(sally).get(f"{API}runs/-1/")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Not found."}


# --- authorization: four eyes, and no way around the request checks -------------------------


def test_an_approver_cannot_approve_their_own_request(april: Any, settings: Any) -> None:
    # Approvers' demo requests are not auto-approved (only admins' are): they wait.
    other = UserFactory(username="otto", roles=["approvers"])
    created = token_client(april).post(f"{API}requests/", request_body(), format="json")
    assert created.status_code == 201 and created.json()["status"] == "pending"
    url = f"{API}requests/{created.json()['id']}/approve/"

    own = token_client(april).post(url, {"comment": "fine by me"}, format="json")
    assert own.status_code == 409 and "your own" in own.json()["detail"], own.content
    req = AccountRequest.objects.get()
    assert req.status == RequestStatus.PENDING and req.decided_by is None
    assert not PipelineRun.objects.exists()

    approved = token_client(other).post(url, {"comment": "ok"}, format="json")
    assert approved.status_code == 200 and approved.json()["decided_by"] == "otto"
    # The run is the requester's: the approver only decided.
    assert PipelineRun.objects.get().created_by == april

    settings.PORTAL_ALLOW_SELF_APPROVAL = True
    second = token_client(april).post(f"{API}requests/", request_body("acme-two"), format="json")
    allowed = token_client(april).post(
        f"{API}requests/{second.json()['id']}/approve/", {}, format="json"
    )
    assert allowed.status_code == 200 and allowed.json()["decided_by"] == "april"


def test_an_approver_cannot_approve_the_plan_of_a_run_they_started(
    april: Any, settings: Any
) -> None:
    other = UserFactory(username="otto", roles=["approvers"])
    run = PipelineRunFactory(status=RunStatus.WAITING_APPROVAL, created_by=april)
    StageRunFactory(run=run, position=1, kind="plan", outputs={"add": 0, "destroy": 1})
    waiting = StageRunFactory(
        run=run, position=2, kind="approve_plan", status=StageStatus.WAITING_APPROVAL
    )
    url = f"{API}runs/{run.pk}/stages/{waiting.pk}/approve/"

    own = token_client(april).post(url, {}, format="json")
    assert own.status_code == 409 and "started by you" in own.json()["detail"], own.content
    waiting.refresh_from_db()
    assert waiting.status == StageStatus.WAITING_APPROVAL and waiting.decided_by is None
    # Another approver may.
    assert token_client(other).post(url, {}, format="json").status_code == 200

    settings.PORTAL_ALLOW_SELF_APPROVAL = True
    mine = PipelineRunFactory(status=RunStatus.WAITING_APPROVAL, created_by=april)
    again = StageRunFactory(
        run=mine, position=1, kind="approve_plan", status=StageStatus.WAITING_APPROVAL
    )
    answer = token_client(april).post(
        f"{API}runs/{mine.pk}/stages/{again.pk}/approve/", {}, format="json"
    )
    assert answer.status_code == 200


def test_a_requester_at_quota_cannot_bring_back_a_torn_down_account(sally: Any) -> None:
    # sandbox demo: max_active_per_user 3.
    for _ in range(3):
        AccountFactory(owner=sally, purpose="demo", status=AccountStatus.READY)
    gone = AccountFactory(
        owner=sally,
        purpose="demo",
        status=AccountStatus.TORN_DOWN,
        expires_at=timezone.now() + timedelta(days=3),
    )
    url = f"{API}accounts/{gone.pk}/runs/"

    refused = token_client(sally).post(url, {"kind": "provision"}, format="json")
    assert refused.status_code == 409, refused.content
    assert "3 in use, limit 3" in refused.json()["detail"]
    assert refused.json()["field"] == "purpose"
    # An update builds it from nothing just the same.
    update = token_client(sally).post(url, {"kind": "update"}, format="json")
    assert update.status_code == 409 and "3 in use, limit 3" in update.json()["detail"]
    assert not PipelineRun.objects.exists()
    gone.refresh_from_db()
    assert gone.status == AccountStatus.TORN_DOWN

    one_ready = Account.objects.filter(owner=sally, status=AccountStatus.READY).first()
    assert one_ready is not None
    Account.objects.filter(pk=one_ready.pk).update(status=AccountStatus.TORN_DOWN)
    started = token_client(sally).post(url, {"kind": "provision"}, format="json")
    assert started.status_code == 201, started.content
    active = Account.objects.filter(owner=sally).exclude(status=AccountStatus.TORN_DOWN)
    assert active.count() == 3


def test_an_expired_torn_down_account_needs_a_new_request(sally: Any) -> None:
    gone = AccountFactory(
        owner=sally,
        purpose="demo",
        status=AccountStatus.TORN_DOWN,
        expires_at=timezone.now() - timedelta(days=1),
    )
    answer = token_client(sally).post(
        f"{API}accounts/{gone.pk}/runs/", {"kind": "provision"}, format="json"
    )
    assert answer.status_code == 409 and "request a new one" in answer.json()["detail"]
    assert not PipelineRun.objects.exists()


def test_bad_page_parameters_are_refused_naming_them(sally: Any) -> None:
    client = token_client(sally)
    for query, name in (("limit=0", "limit"), ("limit=501", "limit"), ("offset=-1", "offset")):
        answer = client.get(f"{API}accounts/?{query}")
        assert answer.status_code == 400 and name in answer.json(), (query, answer.content)
    assert client.get(f"{API}blueprints/?limit=abc").status_code == 400


def test_the_schema_states_the_checks_the_api_makes(sally: Any) -> None:
    schema = token_client(sally).get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    body = components["AccountRequestInputRequest"]["properties"]
    assert body["name"]["pattern"] == "^[a-z][a-z0-9-]{2,39}$"
    assert (body["name"]["minLength"], body["name"]["maxLength"]) == (3, 40)
    assert "sandbox" in components["BlueprintEnum"]["enum"]
    assert "max_ttl_days" in body["expires_at"]["description"]
    listed = schema["paths"]["/api/v1/accounts/"]["get"]["parameters"]
    limit = next(p for p in listed if p["name"] == "limit")["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 500)

    # A name the schema allows is not refused for its form; one it does not allow is.
    ok = token_client(sally).post(f"{API}accounts/", request_body("abc"), format="json")
    assert ok.status_code == 201, ok.content
    newline = token_client(sally).post(f"{API}accounts/", request_body("abd\n"), format="json")
    assert newline.status_code == 400 and "name" in newline.json()
    unknown = token_client(sally).post(
        f"{API}accounts/", request_body(blueprint="nope"), format="json"
    )
    assert unknown.status_code == 400 and "blueprint" in unknown.json()
