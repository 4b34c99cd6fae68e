"""N+1 check for the web pages: the number of SQL queries does not grow with the data.

Each page is measured at a small size, the data is grown (more accounts, runs, stages,
log lines, requests), and the page is measured again: the counts must be equal.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from pipelines.models import LogLine, PipelineRun, StageRun
from tests.factories import (
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db  # the database only: no worker, Terraform or moto

# Session, user, groups, the navigation bar's two approval counts and the page's reads.
MAX_QUERIES = 14


@pytest.fixture
def approver_client() -> Client:
    client = Client()
    client.force_login(UserFactory(username="approver", roles=["approvers"]))
    return client


def queries(client: Client, url: str, **headers: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, **headers)
    assert response.status_code in (200, 286), (url, response.status_code)
    return len(captured), [q["sql"] for q in captured.captured_queries]


def assert_constant(
    client: Client, url: Callable[[], str], grow: Callable[[], None], **h: str
) -> None:
    small, _ = queries(client, url(), **h)
    grow()
    large, sql = queries(client, url(), **h)
    assert large == small, f"{url()}: {small} queries, then {large}:\n" + "\n".join(sql)
    # Session, user, groups and a handful of reads: a page is never far above this.
    assert large <= MAX_QUERIES, f"{url()}: {large} queries:\n" + "\n".join(sql)
    print(f"{url()}: {large} queries")


def add_lines(stage: StageRun, count: int) -> None:
    start = stage.log_lines.count()
    now = timezone.now()
    LogLine.objects.bulk_create(
        LogLine(stage=stage, attempt=1, number=start + n, time=now, text=f"line {start + n}")
        for n in range(1, count + 1)
    )


def add_stages(run: PipelineRun, count: int, status: str = "succeeded") -> list[StageRun]:
    start = run.stages.count()
    now = timezone.now()
    stages = []
    for n in range(1, count + 1):
        stage = StageRunFactory(
            run=run,
            position=start + n,
            kind="plan" if n == 1 else "render",
            status=status,
            started_at=now,
            finished_at=now,
            outputs={"add": 1, "resources": [{"address": f"r.{n}", "action": "create"}]},
        )
        add_lines(stage, 3)
        stages.append(stage)
    return stages


def test_dashboard(approver_client: Client) -> None:
    def grow(count: int) -> None:
        for _ in range(count):
            account = AccountFactory(owner=UserFactory())
            for status in ("failed", "succeeded"):
                add_stages(PipelineRunFactory(account=account, status=status), 2)

    grow(2)
    assert_constant(approver_client, lambda: reverse("dashboard"), lambda: grow(10))
    assert_constant(
        approver_client, lambda: reverse("dashboard") + "?status=requested&page=2", lambda: grow(30)
    )


def test_account_page(approver_client: Client) -> None:
    account = AccountFactory(outputs={"a": {"value": 1, "sensitive": False, "type": "number"}})
    AccountRequestFactory(account=account)
    add_stages(PipelineRunFactory(account=account), 2)

    def grow() -> None:
        for _ in range(8):
            add_stages(PipelineRunFactory(account=account, created_by=UserFactory()), 3)
        AccountRequestFactory(account=account, decided_by=UserFactory())

    assert_constant(approver_client, lambda: reverse("account-detail", args=[account.pk]), grow)


def test_run_page_and_its_live_parts(approver_client: Client) -> None:
    run = PipelineRunFactory(status="waiting_approval")
    first = add_stages(run, 2)[0]
    StageRunFactory(run=run, position=3, kind="approve_plan", status="waiting_approval")

    def grow() -> None:
        add_stages(run, 6, status="pending")
        add_lines(first, 400)

    def grow_more() -> None:
        add_stages(run, 4, status="pending")

    assert_constant(approver_client, lambda: reverse("run-detail", args=[run.pk]), grow)
    assert_constant(
        approver_client,
        lambda: reverse("run-live", args=[run.pk]),
        grow_more,
        HTTP_HX_REQUEST="true",
    )


def test_log_partial(approver_client: Client) -> None:
    run = PipelineRunFactory(status="running")
    stage = StageRunFactory(run=run, position=1, status="running", started_at=timezone.now())
    add_lines(stage, 5)
    add_stages(run, 2, status="pending")

    assert_constant(
        approver_client,
        lambda: reverse("stage-log", args=[run.pk, stage.pk]) + "?after=0",
        lambda: (add_lines(stage, 300), add_stages(run, 5, status="pending")),
        HTTP_HX_REQUEST="true",
    )


def test_approvals(approver_client: Client) -> None:
    def grow(count: int) -> None:
        for _ in range(count):
            AccountRequestFactory(account=AccountFactory(status="requested"))
            run = PipelineRunFactory(status="waiting_approval")
            add_stages(run, 1)
            StageRunFactory(run=run, position=5, kind="approve_plan", status="waiting_approval")

    grow(1)
    assert_constant(approver_client, lambda: reverse("approvals"), lambda: grow(5))
