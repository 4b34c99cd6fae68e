"""Runs that say what happened: cancelled is not failed, later stages are skipped, Retry
only where it helps, Resume for a run stopped before a stage ran, requesters cancel their
own runs, and the runs across accounts (page and API) with their durations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts_app.models import AccountStatus, RequestStatus
from pipelines import engine, services
from pipelines.logs import StageLog
from pipelines.models import RunKind, RunStatus, StageStatus
from pipelines.outcomes import Failed
from pipelines.redaction import Redactor
from tests.conftest import token_client
from tests.factories import (
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def statuses(run: Any) -> list[str]:
    return [stage.status for stage in run.stages.order_by("position")]


def test_a_run_cancelled_before_its_stage_ran_is_cancelled_skips_the_rest_and_resumes(
    sally: Any, adam: Any
) -> None:
    account = AccountFactory(owner=sally, status=AccountStatus.READY)
    run = services.start_run(account, RunKind.UPDATE, user=sally)  # no worker: stays queued

    services.cancel_run(run, user=sally)

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    later = run.stages.count() - 1
    assert statuses(run) == [StageStatus.CANCELLED] + [StageStatus.SKIPPED] * later
    page = client_for(sally).get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "<strong>Cancelled:</strong>" in page and "Failed" not in page
    assert "Resume from" not in page  # sally may not resume; admins do
    admin_page = client_for(adam).get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "Resume from pre_hooks" in admin_page
    assert "Retry pre_hooks" not in admin_page  # it never ran: there is nothing to retry

    client_for(adam).post(reverse("run-resume", args=[run.pk]))

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert statuses(run) == [StageStatus.QUEUED] + [StageStatus.PENDING] * later
    assert run.stages.get(position=1).attempt == 2


def test_resume_is_refused_for_a_failed_stage_which_is_retried_instead(adam: Any) -> None:
    run = PipelineRunFactory(status=RunStatus.FAILED)
    StageRunFactory(run=run, position=1, kind="render", status=StageStatus.SUCCEEDED)
    StageRunFactory(run=run, position=2, kind="plan", status=StageStatus.FAILED)

    with pytest.raises(services.RunRefused, match="plan failed"):
        services.resume_run(run, user=adam)


def test_retry_is_offered_and_allowed_only_where_it_can_help(adam: Any) -> None:
    run = PipelineRunFactory(status=RunStatus.FAILED)
    permanent = StageRunFactory(
        run=run,
        position=1,
        kind="plan",
        status=StageStatus.FAILED,
        started_at=timezone.now(),
        retryable=False,
        explanation="Terraform cannot download hashicorp/aws: configure a provider mirror",
    )
    StageRunFactory(run=run, position=2, kind="apply", status=StageStatus.SKIPPED, attempt=0)

    page = client_for(adam).get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "Retry plan" not in page
    assert "configure a provider mirror" in page  # what to change instead
    with pytest.raises(services.RunRefused, match="a retry of plan cannot help"):
        services.retry_stage(permanent, user=adam)

    permanent.retryable = True
    permanent.save()
    page = client_for(adam).get(reverse("run-detail", args=[run.pk])).content.decode()
    assert "Retry plan" in page
    first = services.retry_stage(permanent, user=adam)
    assert first.status == StageStatus.QUEUED
    assert statuses(run) == [StageStatus.QUEUED, StageStatus.PENDING]  # skipped runs again


def test_a_requester_cancels_her_own_runs_only(sally: Any, adam: Any) -> None:
    mine = AccountFactory(owner=sally, status=AccountStatus.READY)
    hers = services.start_run(mine, RunKind.UPDATE, user=sally)
    client = token_client(sally)

    assert client.post(f"/api/v1/runs/{hers.pk}/cancel/").status_code == 200
    hers.refresh_from_db()
    assert hers.status == RunStatus.CANCELLED

    by_admin = services.start_run(mine, RunKind.UPDATE, user=adam)
    refused = client.post(f"/api/v1/runs/{by_admin.pk}/cancel/")
    assert refused.status_code == 403
    by_admin.refresh_from_db()
    assert by_admin.is_active


def _runs_world(sally: Any) -> dict[str, Any]:
    now = timezone.now()
    mine = AccountFactory(name="sally-one", owner=sally)
    other = AccountFactory(name="someone-else")
    old = PipelineRunFactory(account=mine, kind=RunKind.PROVISION, status=RunStatus.SUCCEEDED)
    failed = PipelineRunFactory(
        account=mine, kind=RunKind.UPDATE, status=RunStatus.FAILED, explanation="plan: boom"
    )
    teardown = PipelineRunFactory(account=mine, kind=RunKind.TEARDOWN, status=RunStatus.CANCELLED)
    theirs = PipelineRunFactory(account=other, kind=RunKind.UPDATE, status=RunStatus.FAILED)
    # Times: the provision long ago and long, the others recent and short.
    for run, started, took in (
        (old, now - timedelta(days=3), timedelta(hours=2)),
        (failed, now - timedelta(hours=2), timedelta(seconds=90)),
        (teardown, now - timedelta(hours=1), timedelta(seconds=5)),
        (theirs, now - timedelta(minutes=30), timedelta(seconds=30)),
    ):
        run.created_at, run.finished_at = started, started + took
        run.save()
    return {"old": old, "failed": failed, "teardown": teardown, "theirs": theirs, "now": now}


def test_the_runs_api_filters_and_pages_what_the_user_may_see(sally: Any, adam: Any) -> None:
    world = _runs_world(sally)
    client = token_client(sally)

    listed = client.get("/api/v1/runs/").json()
    assert [r["id"] for r in listed["results"]] == [
        world["teardown"].pk, world["failed"].pk, world["old"].pk,
    ]  # fmt: skip  # newest first, never another owner's
    assert listed["count"] == 3
    first = listed["results"][0]
    assert (first["account_name"], first["kind"], first["duration_seconds"]) == (
        "sally-one", "teardown", 5.0,
    )  # fmt: skip

    def ids(query: str, who: Any = client) -> list[int]:
        answer = who.get(f"/api/v1/runs/?{query}")
        assert answer.status_code == 200, answer.json()
        return [r["id"] for r in answer.json()["results"]]

    assert ids("kind=update") == [world["failed"].pk]
    assert ids("status=cancelled") == [world["teardown"].pk]
    assert ids("account=sally-one&status=succeeded") == [world["old"].pk]
    assert ids(f"account={world['old'].account_id}&kind=provision") == [world["old"].pk]
    since = (world["now"] - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"since={since}") == [world["teardown"].pk, world["failed"].pk]
    assert ids("kind=update", token_client(adam)) == [world["theirs"].pk, world["failed"].pk]

    paged = client.get("/api/v1/runs/?limit=2").json()
    assert (paged["count"], len(paged["results"])) == (3, 2) and paged["next"]
    bad = client.get("/api/v1/runs/?status=exploded")
    assert bad.status_code == 400 and "status" in bad.json()
    detail = client.get(f"/api/v1/runs/{world['failed'].pk}/").json()
    assert detail["duration_seconds"] == 90.0


def test_the_runs_page_searches_sorts_and_shows_durations(sally: Any) -> None:
    world = _runs_world(sally)
    client = client_for(sally)

    page = client.get(reverse("run-list")).content.decode()
    assert "someone-else" not in page
    assert "2h 00m" in page and "1m 30s" in page and "5s" in page  # every run's duration
    longest = client.get(reverse("run-list") + "?sort=-duration").content.decode()
    assert longest.index(f"#{world['old'].pk}<") < longest.index(f"#{world['failed'].pk}<")
    searched = client.get(reverse("run-list") + "?q=boom").content.decode()
    assert f"#{world['failed'].pk}<" in searched and f"#{world['old'].pk}<" not in searched
    account_page = client.get(reverse("account-detail", args=[world["old"].account_id]))
    assert "2h 00m" in account_page.content.decode()  # the account's runs table too


def test_the_navigation_bar_counts_the_approvals_waiting(sally: Any, april: Any) -> None:
    AccountRequestFactory(
        account=AccountFactory(owner=sally, status=AccountStatus.REQUESTED),
        status=RequestStatus.PENDING,
    )
    run = PipelineRunFactory(status=RunStatus.WAITING_APPROVAL)
    StageRunFactory(run=run, kind="approve_plan", status=StageStatus.WAITING_APPROVAL)

    page = client_for(april).get(reverse("dashboard")).content.decode()
    assert 'id="approvals-waiting"' in page and ">2</span>" in page
    assert (
        'id="approvals-waiting"' not in client_for(sally).get(reverse("dashboard")).content.decode()
    )


def test_a_requester_withdraws_her_pending_request_and_the_name_is_free(sally: Any) -> None:
    account = AccountFactory(name="not-needed", owner=sally, status=AccountStatus.REQUESTED)
    req = AccountRequestFactory(account=account, status=RequestStatus.PENDING)
    client = token_client(sally)

    answer = client.post(f"/api/v1/requests/{req.pk}/withdraw/")

    assert answer.status_code == 200, answer.json()
    assert answer.json()["status"] == "withdrawn"
    account.refresh_from_db()
    assert account.status == AccountStatus.WITHDRAWN
    again = client.post(f"/api/v1/requests/{req.pk}/withdraw/")
    assert again.status_code == 409 and "only a pending request" in again.json()["detail"]
    AccountFactory(name="not-needed")  # the name is free again


def test_a_rejected_request_is_edited_and_sent_again(sally: Any) -> None:
    account = AccountFactory(name="try-again", owner=sally, status=AccountStatus.REJECTED)
    req = AccountRequestFactory(account=account, status=RequestStatus.REJECTED, reason="demo")
    client = client_for(sally)
    page = client.get(reverse("account-detail", args=[account.pk])).content.decode()
    assert "Edit and send again" in page and "dns_zone: acme-demo.internal" in page

    bad = client.post(
        reverse("request-resubmit", args=[req.pk]), {"config": "cidr: [not, a, cidr]"}, follow=True
    )
    assert "cidr" in bad.content.decode()
    assert account.requests.count() == 1
    edited = {**account.config, "instance_size": "large"}
    api = token_client(sally).post(
        f"/api/v1/requests/{req.pk}/resubmit/",
        {"config": edited, "reason": "smaller this time"},
        format="json",
    )

    assert api.status_code == 201, api.json()
    assert (api.json()["status"], api.json()["config"]["instance_size"]) == ("pending", "large")
    account.refresh_from_db()
    assert account.status == AccountStatus.REQUESTED
    assert account.config["instance_size"] == "large"
    assert account.requests.count() == 2  # the rejected one stays, for the record


def test_the_accounts_list_searches_and_sorts(sally: Any) -> None:
    now = timezone.now()
    AccountFactory(name="alpha-one", owner=sally, expires_at=now + timedelta(days=9))
    AccountFactory(name="beta-two", owner=sally, expires_at=now + timedelta(days=1))
    AccountFactory(name="gamma-three", owner=sally)
    client = client_for(sally)

    searched = client.get(reverse("dashboard") + "?q=two").content.decode()
    assert "beta-two" in searched and "alpha-one" not in searched
    by_expiry = client.get(reverse("dashboard") + "?sort=expires").content.decode()
    assert (
        by_expiry.index("beta-two") < by_expiry.index("alpha-one") < by_expiry.index("gamma-three")
    )  # the soonest first, never-expiring last


def test_a_stage_that_fails_on_its_way_out_of_a_cancel_is_cancelled(sally: Any) -> None:
    account = AccountFactory(owner=sally, status=AccountStatus.PROVISIONING)
    run = PipelineRunFactory(account=account, status=RunStatus.RUNNING, cancel_requested=True)
    hook = StageRunFactory(run=run, position=1, kind="pre_hooks", status=StageStatus.RUNNING)
    StageRunFactory(run=run, position=2, kind="render", status=StageStatus.PENDING, attempt=0)

    # The hook was killed by the cancel and reported a failure, as a killed process does.
    engine._record_outcome(
        stage_id=hook.pk,
        attempt=hook.attempt,
        outcome=Failed(explanation="hook 10-slow.sh was killed (signal 15)"),
        log=StageLog(hook.pk, hook.attempt, Redactor()),
    )

    run.refresh_from_db()
    assert (run.status, run.explanation) == (RunStatus.CANCELLED, "cancelled by a user")
    assert statuses(run) == [StageStatus.CANCELLED, StageStatus.SKIPPED]
