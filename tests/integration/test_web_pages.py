"""The web pages through Django's test client, on the real database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts_app.models import (
    Account,
    AccountRequest,
    AccountStatus,
    ParityReport,
    RequestStatus,
)
from pipelines.models import LogLine, PipelineRun, RunStatus, StageRun, StageStatus
from tests.factories import (
    AccountFactory,
    AccountRequestFactory,
    PipelineRunFactory,
    StageRunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db  # the database only: no worker, Terraform or moto


@pytest.fixture
def sales() -> Any:
    return UserFactory(username="sales", roles=["requesters"])


@pytest.fixture
def approver() -> Any:
    return UserFactory(username="approver", roles=["approvers"])


@pytest.fixture
def admin() -> Any:
    return UserFactory(username="admin", roles=["admins"])


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def sandbox_post(**overrides: str) -> dict[str, str]:
    data = {
        "name": "acme-demo",
        "purpose": "demo",
        "expires_on": (timezone.localdate() + timedelta(days=10)).isoformat(),
        "reason": "Demo for ACME on Friday",
        "c.cidr": "10.40.0.0/16",
        "c.dns_zone": "acme.internal",
        "c.instance_size": "small",
        "c.services.rows": "2",
        "c.services.0.name": "web",
        "c.services.1.name": "orders",
        "c.services.1.database": "on",
        "submit": "1",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# --- login, layout ------------------------------------------------------------------------


def test_login_page_and_logout_by_post(sales: Any) -> None:
    anonymous = Client()
    response = anonymous.get(reverse("dashboard"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))

    page = anonymous.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content and b"csrfmiddlewaretoken" in page.content
    assert b"/static/portal.css" in page.content and b"/static/htmx.min.js" in page.content

    logged_in = anonymous.post(
        reverse("login"), {"username": "sales", "password": "pw-for-tests-1"}
    )
    assert logged_in.status_code == 302
    assert anonymous.get(reverse("dashboard")).status_code == 200
    assert anonymous.get(reverse("logout")).status_code == 405  # logout is a POST
    assert anonymous.post(reverse("logout")).status_code == 302
    assert anonymous.get(reverse("dashboard")).status_code == 302


def test_static_files_are_served() -> None:
    client = Client()
    css = client.get("/static/portal.css")
    htmx = client.get("/static/htmx.min.js")
    assert css.status_code == 200 and htmx.status_code == 200
    assert b"htmx" in b"".join(htmx.streaming_content if htmx.streaming else [htmx.content])


# --- dashboard ----------------------------------------------------------------------------


def test_dashboard_lists_own_accounts_with_their_latest_run(sales: Any) -> None:
    mine = AccountFactory(name="mine-demo", owner=sales, purpose="demo", status="ready")
    AccountFactory(name="someone-else", purpose="qa")
    PipelineRunFactory(account=mine, status="failed")
    newest = PipelineRunFactory(account=mine, status="succeeded")

    response = client_for(sales).get(reverse("dashboard"))

    text = response.content.decode()
    assert response.status_code == 200
    assert "mine-demo" in text and "someone-else" not in text
    assert reverse("run-detail", args=[newest.pk]) in text
    assert "Request an account" in text
    assert 'name="owner"' not in text  # requesters only see their own: no owner filter


def test_dashboard_filters_and_paginates_for_approvers(approver: Any) -> None:
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    for i in range(30):
        AccountFactory(name=f"qa-{i:02d}", owner=alice, purpose="qa", status="ready")
    AccountFactory(name="bob-demo", owner=bob, purpose="demo", status="failed")
    client = client_for(approver)

    first = client.get(reverse("dashboard")).content.decode()
    assert "Page 1 of 2" in first and "31 accounts" in first
    assert 'name="owner"' in first and '<option value="bob"' in first

    by_status = client.get(reverse("dashboard"), {"status": "failed"}).content.decode()
    assert "bob-demo" in by_status and "qa-00" not in by_status
    by_owner = client.get(reverse("dashboard"), {"owner": "alice", "page": "2"}).content.decode()
    assert "qa-29" in by_owner and "bob-demo" not in by_owner
    assert "owner=alice&amp;page=1" in by_owner  # pagination keeps the filters
    by_purpose = client.get(reverse("dashboard"), {"purpose": "demo"}).content.decode()
    assert "bob-demo" in by_purpose and "qa-01" not in by_purpose


def test_a_deep_dashboard_page_shows_its_rows_latest_run_and_parity(approver: Any) -> None:
    owner = UserFactory(username="deep-owner")
    accounts = [AccountFactory(name=f"deep-{i:02d}", owner=owner) for i in range(30)]
    deep = accounts[27]
    PipelineRunFactory(account=deep, status="failed")
    newest = PipelineRunFactory(account=deep, status="succeeded")
    now = timezone.now()
    ParityReport.objects.create(account=deep, checked_at=now, in_parity=False, report={})
    ParityReport.objects.create(account=accounts[28], checked_at=now, in_parity=True, report={})
    ParityReport.objects.create(  # older than its report in parity above: not the latest
        account=accounts[28], checked_at=now - timedelta(days=1), in_parity=False, report={}
    )
    client = client_for(approver)

    with CaptureQueriesContext(connection) as captured:
        text = client.get(reverse("dashboard"), {"page": "2"}).content.decode()
    assert "deep-27" in text and "deep-00" not in text
    assert reverse("run-detail", args=[newest.pk]) in text
    assert text.count("out of parity</a>") == 1 and text.count("in parity</span>") == 1
    # The page's query computes no per-account subquery for the 25 rows it skips.
    [paged] = [q["sql"] for q in captured.captured_queries if "OFFSET" in q["sql"]]
    assert "pipelines_pipelinerun" not in paged and "parityreport" not in paged

    out = client.get(reverse("dashboard"), {"parity": "out"}).content.decode()
    assert ">deep-27</a>" in out and ">deep-28</a>" not in out


# --- request form -------------------------------------------------------------------------


def test_request_pick_lists_blueprints(sales: Any) -> None:
    response = client_for(sales).get(reverse("request-pick"))
    assert response.status_code == 200
    assert reverse("request-form", args=["sandbox"]) in response.content.decode()


def test_request_form_is_generated_from_the_schema_and_policy(sales: Any) -> None:
    response = client_for(sales).get(reverse("request-form", args=["sandbox"]))

    text = response.content.decode()
    assert response.status_code == 200
    assert 'name="c.cidr" value="10.20.0.0/16"' in text  # default pre-filled
    assert "Network CIDR" in text and "for example 10.20.0.0/16" in text  # title, description
    assert '<select id="id_c-instance_size" name="c.instance_size"' in text
    assert 'name="c.services.0.name" value="web"' in text
    assert 'name="add_row" value="c.services"' in text
    assert "account_name" not in text  # the account's name is its name field, asked once
    purposes = response.context["meta"].fields["purpose"].choices
    assert [value for value, _ in purposes] == ["demo", "qa", "loadtest", "standby"]
    default_expiry = timezone.localdate() + timedelta(days=14)  # demo's default_ttl_days
    assert response.context["meta"].initial["expires_on"] == default_expiry.isoformat()
    latest = (timezone.localdate() + timedelta(days=30)).isoformat()
    assert f'max="{latest}"' in text


def test_unknown_blueprint_is_404(sales: Any) -> None:
    assert client_for(sales).get(reverse("request-form", args=["nope"])).status_code == 404


def test_a_bad_cidr_is_shown_next_to_its_field_and_values_are_kept(sales: Any) -> None:
    response = client_for(sales).post(
        reverse("request-form", args=["sandbox"]), sandbox_post(**{"c.cidr": "10.0.0.0/99"})
    )

    assert response.status_code == 400
    form = response.context["config_form"]
    cidr = form.node_at("$.cidr")
    assert cidr.errors == [
        "Not in the expected format. The account's IPv4 range, for example 10.20.0.0/16."
    ]
    text = response.content.decode()
    assert 'name="c.cidr" value="10.0.0.0/99"' in text
    assert 'id="id_c-cidr-errors"' in text
    assert 'name="c.services.1.name" value="orders"' in text and "checked" in text
    assert 'value="acme-demo"' in text and "Demo for ACME on Friday" in text
    assert not Account.objects.exists()


def test_a_service_error_is_shown_on_its_row(sales: Any) -> None:
    response = client_for(sales).post(
        reverse("request-form", args=["sandbox"]),
        sandbox_post(**{"c.services.1.name": "Orders!"}),
    )

    assert response.status_code == 400
    row_field = response.context["config_form"].node_at("$.services[1].name")
    assert row_field.name == "c.services.1.name" and row_field.errors


def test_add_a_service_rerenders_with_one_more_row(sales: Any) -> None:
    data = sandbox_post(add_row="c.services")
    del data["submit"]

    response = client_for(sales).post(reverse("request-form", args=["sandbox"]), data)

    assert response.status_code == 200
    text = response.content.decode()
    assert 'name="c.services.2.name" value=""' in text
    assert 'name="c.services.rows" value="3"' in text
    assert "errorlist" not in text
    assert not Account.objects.exists()


def test_preview_shows_the_rendered_terraform(sales: Any) -> None:
    data = sandbox_post(preview="1")
    del data["submit"]

    response = client_for(sales).post(reverse("request-form", args=["sandbox"]), data)

    assert response.status_code == 200
    files = dict(response.context["preview"])
    assert files and all(not path.endswith(".j2") for path in files)
    assert any('"10.40.0.0/16"' in text for text in files.values())
    assert "acme-demo" in "".join(files.values())
    assert not Account.objects.exists()


def test_submit_creates_a_pending_request_for_sales(sales: Any) -> None:
    response = client_for(sales).post(reverse("request-form", args=["sandbox"]), sandbox_post())

    account = Account.objects.get(name="acme-demo")
    assert response.status_code == 302
    assert response["Location"] == reverse("account-detail", args=[account.pk])
    assert account.owner == sales and account.status == AccountStatus.REQUESTED
    assert "account_name" not in account.config  # the name is the account's own
    assert account.config["services"] == [
        {"name": "web", "database": False},
        {"name": "orders", "database": True},
    ]
    req = AccountRequest.objects.get(account=account)
    assert req.status == RequestStatus.PENDING and req.reason == "Demo for ACME on Friday"
    assert account.expires_at is not None
    assert account.expires_at.date() == timezone.localdate() + timedelta(days=10)
    assert not PipelineRun.objects.exists()


def test_expiry_beyond_the_policy_is_refused_next_to_the_date(sales: Any) -> None:
    too_late = (timezone.localdate() + timedelta(days=40)).isoformat()

    response = client_for(sales).post(
        reverse("request-form", args=["sandbox"]), sandbox_post(expires_on=too_late)
    )

    assert response.status_code == 400
    assert "at most 30 days" in " ".join(response.context["meta"].errors["expires_on"])


def test_expiry_errors_appear_with_the_config_errors_and_in_preview(sales: Any) -> None:
    too_late = (timezone.localdate() + timedelta(days=40)).isoformat()
    client = client_for(sales)
    url = reverse("request-form", args=["sandbox"])

    both = client.post(url, sandbox_post(expires_on=too_late, **{"c.cidr": "10.1.0.0/99"}))
    assert both.status_code == 400
    assert "at most 30 days" in " ".join(both.context["meta"].errors["expires_on"])
    assert both.context["config_form"].node_at("$.cidr").errors  # shown together
    assert not Account.objects.exists()

    preview = client.post(url, sandbox_post(expires_on=too_late, submit=None, preview="1"))
    assert preview.context["preview"]  # the files are shown
    assert "at most 30 days" in " ".join(preview.context["meta"].errors["expires_on"])
    page = preview.content.decode()
    assert "at most 30 days from now for demo accounts" in page


def test_field_errors_and_limits_are_in_words_never_a_regular_expression(sales: Any) -> None:
    url = reverse("request-form", args=["sandbox"])
    page = client_for(sales).get(url).content.decode()
    # Limits are shown before they are broken: in the help text and as maxlength.
    assert "A lower-case letter, then 1 to 30 lower-case letters, digits or underscores" in page
    assert 'name="c.services.0.name" value="web" maxlength="31"' in page
    assert "At most 20 services." in page
    assert 'id="id_name" maxlength="40"' in page or 'maxlength="40"' in page

    bad = client_for(sales).post(url, sandbox_post(**{"c.services.1.name": "Orders!"}))
    errors = bad.context["config_form"].node_at("$.services[1].name").errors
    assert errors == [
        "Not in the expected format: a lower-case letter, then 1 to 30 lower-case letters, "
        "digits or underscores."
    ]
    assert "[a-z" not in bad.content.decode()


def test_quota_is_refused_with_the_numbers(sales: Any) -> None:
    for i in range(3):
        AccountFactory(name=f"used-{i}", owner=sales, purpose="demo", status="ready")

    response = client_for(sales).post(reverse("request-form", args=["sandbox"]), sandbox_post())

    assert response.status_code == 400
    errors = " ".join(response.context["meta"].errors["purpose"])
    assert "3 in use" in errors and "limit 3" in errors


def test_a_taken_name_is_shown_on_the_name_field(sales: Any) -> None:
    AccountFactory(name="acme-demo")

    response = client_for(sales).post(reverse("request-form", args=["sandbox"]), sandbox_post())

    assert response.status_code == 400
    assert "already exists" in " ".join(response.context["meta"].errors["name"])


# --- approvals ----------------------------------------------------------------------------


def test_approvals_lists_requests_and_waiting_plans(approver: Any) -> None:
    req = AccountRequestFactory(account__name="pending-one", reason="for QA")
    run = PipelineRunFactory(account__name="planned", status="waiting_approval")
    StageRunFactory(
        run=run,
        position=1,
        kind="plan",
        outputs={
            "add": 2,
            "change": 0,
            "replace": 1,
            "destroy": 1,
            "resources": [
                {"address": "terraform_data.network", "action": "create"},
                {"address": "terraform_data.old", "action": "delete"},
            ],
        },
    )
    waiting = StageRunFactory(
        run=run, position=2, kind="approve_plan", status="waiting_approval", outputs={}
    )

    response = client_for(approver).get(reverse("approvals"))

    text = response.content.decode()
    assert response.status_code == 200
    assert "pending-one" in text and "for QA" in text and "10.20.0.0/16" in text
    assert reverse("request-approve", args=[req.pk]) in text
    assert reverse("stage-approve", args=[run.pk, waiting.pk]) in text
    assert "2 to add" in text and "1 to replace" in text and "1 to destroy" in text
    assert "terraform_data.old" in text


def test_approving_a_request_starts_the_provision_run(approver: Any) -> None:
    req = AccountRequestFactory(account__name="to-approve", account__status="requested")

    response = client_for(approver).post(
        reverse("request-approve", args=[req.pk]), {"comment": "ok for the demo"}
    )

    assert response.status_code == 302 and response["Location"] == reverse("approvals")
    req.refresh_from_db()
    assert req.status == RequestStatus.APPROVED and req.decided_by == approver
    assert req.comment == "ok for the demo"
    assert PipelineRun.objects.filter(account=req.account, kind="provision").exists()


def test_rejecting_needs_a_comment(approver: Any) -> None:
    req = AccountRequestFactory(account__name="to-reject", account__status="requested")
    client = client_for(approver)

    no_comment = client.post(reverse("request-reject", args=[req.pk]), {"comment": " "})
    assert no_comment.status_code == 302
    req.refresh_from_db()
    assert req.status == RequestStatus.PENDING
    messages = [str(m) for m in no_comment.wsgi_request._messages]  # type: ignore[attr-defined]
    assert any("comment" in m for m in messages)

    client.post(reverse("request-reject", args=[req.pk]), {"comment": "no budget"})
    req.refresh_from_db()
    assert req.status == RequestStatus.REJECTED and req.comment == "no budget"


def test_approving_a_plan_moves_the_run_on(approver: Any) -> None:
    run = PipelineRunFactory(status="waiting_approval")
    stage = StageRunFactory(run=run, position=1, kind="approve_plan", status="waiting_approval")
    StageRunFactory(run=run, position=2, kind="render", status="pending", attempt=0)

    response = client_for(approver).post(
        reverse("stage-approve", args=[run.pk, stage.pk]), {"comment": "looks right"}
    )

    assert response.status_code == 302
    stage.refresh_from_db()
    assert stage.status == StageStatus.SUCCEEDED and stage.decision_comment == "looks right"
    assert run.stages.get(position=2).status == StageStatus.QUEUED


def test_rejecting_a_plan_fails_the_run_with_the_reason(approver: Any) -> None:
    run = PipelineRunFactory(status="waiting_approval")
    stage = StageRunFactory(run=run, position=1, kind="approve_plan", status="waiting_approval")

    client_for(approver).post(
        reverse("stage-reject", args=[run.pk, stage.pk]),
        {"comment": "destroys the database", "next": reverse("approvals")},
    )

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "destroys the database" in run.explanation


# --- account page -------------------------------------------------------------------------


def test_account_page_hides_sensitive_outputs_and_shows_the_plan(sales: Any) -> None:
    account = AccountFactory(
        name="acme-ready",
        owner=sales,
        status="ready",
        outputs={
            "vpc_cidr": {"value": "10.20.0.0/16", "sensitive": False, "type": "string"},
            "db_password": {"value": "hunter2-secret", "sensitive": True, "type": "string"},
        },
        endpoints={"orders": {"host": "orders.acme.internal", "port": 5432}},
    )
    AccountRequestFactory(account=account, status="approved")
    run = PipelineRunFactory(account=account, status="succeeded")
    StageRunFactory(
        run=run,
        kind="plan",
        outputs={"add": 3, "change": 0, "replace": 0, "destroy": 0, "resources": []},
    )

    response = client_for(sales).get(reverse("account-detail", args=[account.pk]))

    text = response.content.decode()
    assert response.status_code == 200
    assert "10.20.0.0/16" in text and "db_password" in text and "(sensitive)" in text
    assert "hunter2-secret" not in text
    assert "orders.acme.internal" in text
    assert "3 to add" in text
    assert reverse("run-detail", args=[run.pk]) in text
    assert reverse("account-start-run", args=[account.pk]) in text


def test_starting_an_update_run_from_the_account_page(sales: Any) -> None:
    account = AccountFactory(name="acme-upd", owner=sales, status="ready")

    response = client_for(sales).post(
        reverse("account-start-run", args=[account.pk]), {"kind": "update"}
    )

    run = PipelineRun.objects.get(account=account)
    assert run.kind == "update"
    assert response["Location"] == reverse("run-detail", args=[run.pk])


def test_teardown_needs_the_accounts_name_typed(sales: Any) -> None:
    account = AccountFactory(name="acme-gone", owner=sales, status="ready")
    client = client_for(sales)
    url = reverse("account-start-run", args=[account.pk])

    page = client.get(reverse("account-detail", args=[account.pk])).content.decode()
    assert 'value="teardown"' in page and "Type <strong>acme-gone</strong> to confirm" in page
    for typed in ("", "1", "on", "acme-gon"):
        unconfirmed = client.post(url, {"kind": "teardown", "confirm": typed}, follow=True)
        assert unconfirmed.redirect_chain[-1][0] == reverse("account-detail", args=[account.pk])
        assert "type the account&#x27;s name, acme-gone" in unconfirmed.content.decode()
    assert not PipelineRun.objects.filter(account=account).exists()

    confirmed = client.post(url, {"kind": "teardown", "confirm": "acme-gone"})
    run = PipelineRun.objects.get(account=account)
    assert run.kind == "teardown"
    assert confirmed["Location"] == reverse("run-detail", args=[run.pk])


def test_refresh_data_is_offered_only_for_blueprints_with_databases(sales: Any) -> None:
    sandbox = AccountFactory(
        name="acme-nodb", owner=sales, status="ready", blueprint="sandbox-infra"
    )
    with_db = AccountFactory(name="acme-db", owner=sales, status="ready", blueprint="logical-data")
    client = client_for(sales)

    without = client.get(reverse("account-detail", args=[sandbox.pk])).content.decode()
    with_button = client.get(reverse("account-detail", args=[with_db.pk])).content.decode()

    assert 'value="refresh-data"' not in without
    assert 'value="refresh-data"' in with_button


def test_a_requested_account_offers_no_run_button(sales: Any) -> None:
    account = AccountFactory(name="acme-wait", owner=sales, status="requested")
    text = client_for(sales).get(reverse("account-detail", args=[account.pk])).content.decode()
    assert reverse("account-start-run", args=[account.pk]) not in text
    assert "waits for approval" in text


# --- run page -----------------------------------------------------------------------------


def make_failed_run(owner: Any) -> tuple[PipelineRun, StageRun, StageRun]:
    now = timezone.now()
    run = PipelineRunFactory(
        account__owner=owner,
        account__name="acme-run",
        status="failed",
        explanation="pre_hooks: hook 10-net.sh exited with status 3: not attached yet",
    )
    hooks = StageRunFactory(
        run=run,
        position=1,
        kind="pre_hooks",
        status="failed",
        queued_at=now - timedelta(seconds=30),
        started_at=now - timedelta(seconds=29),
        finished_at=now - timedelta(seconds=20),
        explanation="hook 10-net.sh exited with status 3: not attached yet",
    )
    render = StageRunFactory(run=run, position=2, kind="render", status="cancelled", attempt=0)
    for n in range(1, 6):
        LogLine.objects.create(stage=hooks, attempt=1, number=n, time=now, text=f"line {n}")
    return run, hooks, render


def test_run_page_shows_the_failure_timeline_log_and_retry_for_admins(
    sales: Any, admin: Any
) -> None:
    run, hooks, _ = make_failed_run(sales)

    as_admin = client_for(admin).get(reverse("run-detail", args=[run.pk])).content.decode()
    as_owner = client_for(sales).get(reverse("run-detail", args=[run.pk])).content.decode()

    assert 'class="explanation"' in as_admin and "not attached yet" in as_admin
    assert 'class="tl-bar failed"' in as_admin
    assert "line 5" in as_admin
    assert reverse("stage-retry", args=[run.pk, hooks.pk]) in as_admin
    assert reverse("stage-retry", args=[run.pk, hooks.pk]) not in as_owner
    assert "log-poll" not in as_owner  # a finished run follows nothing
    assert reverse("run-live", args=[run.pk]) not in as_owner


def test_retry_from_the_run_page_queues_the_stage_again(admin: Any, sales: Any) -> None:
    run, hooks, _ = make_failed_run(sales)

    response = client_for(admin).post(reverse("stage-retry", args=[run.pk, hooks.pk]))

    assert response.status_code == 302
    hooks.refresh_from_db()
    run.refresh_from_db()
    assert (hooks.status, hooks.attempt, run.status) == ("queued", 2, "running")


def test_an_active_run_follows_its_logs_and_offers_cancel(admin: Any) -> None:
    run = PipelineRunFactory(status="running")
    running = StageRunFactory(
        run=run, position=1, kind="pre_hooks", status="running", started_at=timezone.now()
    )
    LogLine.objects.create(stage=running, attempt=1, number=1, time=timezone.now(), text="hi")
    StageRunFactory(run=run, position=2, kind="render", status="pending", attempt=0)

    text = client_for(admin).get(reverse("run-detail", args=[run.pk])).content.decode()

    log_url = reverse("stage-log", args=[run.pk, running.pk])
    assert f'hx-get="{log_url}?after=1"' in text
    assert reverse("run-live", args=[run.pk]) in text
    assert reverse("run-cancel", args=[run.pk]) in text
    assert 'class="tl-bar running"' in text


def test_the_log_partial_appends_only_new_lines_and_stops_when_finished(sales: Any) -> None:
    run, hooks, _ = make_failed_run(sales)
    client = client_for(sales)
    url = reverse("stage-log", args=[run.pk, hooks.pk])

    response = client.get(url, {"after": "3"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 286  # finished: htmx stops polling
    text = response.content.decode()
    assert "line 4" in text and "line 5" in text and "line 3" not in text
    assert "log-poll" not in text

    plain = client.get(url, {"after": "4"})
    assert plain["Content-Type"].startswith("text/plain")
    assert plain.content.decode().strip().endswith("line 5")


def test_the_log_partial_of_a_running_stage_carries_the_next_poller(admin: Any) -> None:
    run = PipelineRunFactory(status="running")
    stage = StageRunFactory(run=run, position=1, status="running", started_at=timezone.now())
    for n in (1, 2):
        LogLine.objects.create(stage=stage, attempt=1, number=n, time=timezone.now(), text=f"l{n}")
    client = client_for(admin)
    url = reverse("stage-log", args=[run.pk, stage.pk])

    response = client.get(url, {"after": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert f'hx-get="{url}?after=2"' in response.content.decode()
    empty = client.get(url, {"after": "2"}, HTTP_HX_REQUEST="true")
    # Nothing new: just the next poller, not even a newline (it would pile up in the <pre>).
    assert empty.content.decode() == (
        f'<span class="log-poll" hx-get="{url}?after=2" hx-trigger="every 1s" '
        'hx-swap="outerHTML"></span>'
    )


def test_run_live_refreshes_stage_heads_and_stops_when_finished(sales: Any, admin: Any) -> None:
    run, hooks, render = make_failed_run(sales)
    url = reverse("run-live", args=[run.pk])

    finished = client_for(sales).get(url, HTTP_HX_REQUEST="true")
    assert finished.status_code == 286
    text = finished.content.decode()
    assert f'id="stage-head-{hooks.pk}" hx-swap-oob="true"' in text
    assert 'id="run-live"' in text

    # Someone retried a stage the page saw as finished: the browser reloads the page.
    client_for(admin).post(reverse("stage-retry", args=[run.pk, hooks.pk]))
    reloaded = client_for(sales).get(
        url, {"unwatched": f"{hooks.pk},{render.pk}"}, HTTP_HX_REQUEST="true"
    )
    assert reloaded.status_code == 200 and reloaded["HX-Refresh"] == "true"


def test_a_waiting_plan_shows_approve_and_reject_to_approvers_only(
    approver: Any, sales: Any
) -> None:
    run = PipelineRunFactory(account__owner=sales, status="waiting_approval")
    StageRunFactory(run=run, position=1, kind="plan", outputs={"add": 1, "destroy": 2})
    waiting = StageRunFactory(
        run=run, position=2, kind="approve_plan", status="waiting_approval", outputs={}
    )
    approve_url = reverse("stage-approve", args=[run.pk, waiting.pk])

    as_approver = client_for(approver).get(reverse("run-detail", args=[run.pk])).content.decode()
    as_owner = client_for(sales).get(reverse("run-detail", args=[run.pk])).content.decode()

    assert approve_url in as_approver and "2 to destroy" in as_approver
    assert approve_url not in as_owner and "2 to destroy" in as_owner
    # A plan that starts waiting while an approver watches: the page reloads for the form.
    live = client_for(approver).get(
        reverse("run-live", args=[run.pk]), {"deciding": ""}, HTTP_HX_REQUEST="true"
    )
    assert live["HX-Refresh"] == "true"


def test_the_request_fields_show_their_limits_before_they_are_broken(sales: Any) -> None:
    page = client_for(sales).get(reverse("request-form", args=["sandbox"])).content.decode()
    assert 'name="reason"' in page and 'maxlength="2000"' in page
    assert "At most 2000 characters." in page
    assert 'name="name" maxlength="40"' in page
    assert "3 to 40 characters: lower-case letters, digits and dashes; a letter first." in page
