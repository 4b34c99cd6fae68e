"""Drift: a change made outside the portal is found by the drift check, flagged once,
its owner told once, and reconciled by an update run under the approval policy."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from accounts_app import drift
from accounts_app.models import Account, AccountStatus, DriftReport
from accounts_app.notifications import DRIFT_DETECTED, RUN_FINISHED, compose
from accounts_app.tasks import notify
from pipelines import services as run_services
from pipelines.models import OutboxMessage, PipelineRun, RunKind, RunStatus, StageStatus, Trigger
from pipelines.stages.terraform_support import state_schema
from tests.conftest import token_client
from tests.factories import AccountFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def change_state_out_of_band(account_name: str, *, address: str) -> None:
    """What an operator with the state's credentials might do by hand: rewrite a
    resource's attributes in the ``pg`` backend's state, outside the portal."""
    schema = state_schema(account_name)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT data FROM {schema}.states WHERE name = 'default'")
        [data] = cursor.fetchone()
        state = json.loads(data)
        kind, name = address.split(".")
        [resource] = [r for r in state["resources"] if (r["type"], r["name"]) == (kind, name)]
        attributes = resource["instances"][0]["attributes"]
        attributes["triggers_replace"] = {"type": ["tuple", ["string"]], "value": ["10.99.0.0/16"]}
        state["serial"] += 1
        cursor.execute(
            f"UPDATE {schema}.states SET data = %s WHERE name = 'default'",
            [json.dumps(state)],
        )


@contextlib.contextmanager
def state_locked(account_name: str) -> Iterator[None]:
    """Hold the ``pg`` backend's lock on the account's state (an advisory lock on its row)."""
    schema = state_schema(account_name)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {schema}.states WHERE name = 'default'")
        [state_id] = cursor.fetchone()
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [state_id])
        assert cursor.fetchone() == (True,)
        try:
            yield
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [state_id])


def drift_notices() -> list[Any]:
    return [
        args
        for args in OutboxMessage.objects.filter(task=notify.name).values_list("args", flat=True)
        if args[0] == DRIFT_DETECTED
    ]


def test_drift_after_an_out_of_band_change_is_flagged_once_notified_once_and_reconciled(
    celery_worker, wait_for_run, client
) -> None:
    owner = UserFactory(username="drift-owner", email="drift-owner@example.com")
    approver = UserFactory(username="drift-approver", roles=["approvers"])
    account = AccountFactory(name="drifty", blueprint="sandbox-infra", purpose="qa", owner=owner)
    provision = wait_for_run(run_services.start_run(account, "provision").pk, timeout=240)
    assert provision.status == RunStatus.SUCCEEDED, provision.explanation

    # An edit of the config not applied yet is not drift: the check plans what was applied.
    Account.objects.filter(pk=account.pk).update(
        config={**account.config, "instance_size": "large"}
    )

    # The schedule: the account was never checked, so it is due; the check finds nothing.
    [first] = drift.check_due()
    assert (first.kind, first.trigger) == (RunKind.DRIFT_CHECK, Trigger.SCHEDULE)
    assert drift.check_due() == []  # checked today: not due again until tomorrow
    first = wait_for_run(first.pk, timeout=240)
    assert first.status == RunStatus.SUCCEEDED, first.explanation
    assert [s.kind for s in first.stages.all()] == ["render", "drift_plan"]  # never an apply
    report = DriftReport.objects.get(run=first)
    assert not report.drifted and drift.current_drift(account) is None
    assert drift_notices() == []
    # A routine check is not news: no "run succeeded" mail for it.
    assert compose(event=RUN_FINISHED, object_id=first.pk) is None

    change_state_out_of_band("drifty", address="terraform_data.network")

    # Asked for through the API, as an owner would: POST .../drift/ starts a check.
    api = token_client(owner)
    answer = api.post(f"/api/v1/accounts/{account.pk}/drift/")
    assert answer.status_code == 201, answer.content
    second = wait_for_run(answer.json()["id"], timeout=240)
    assert second.status == RunStatus.SUCCEEDED, second.explanation
    found = drift.current_drift(account)
    assert found is not None and found.run_id == second.pk and found.notified
    changed = {(r["address"], r["action"]) for r in found.summary["resources"]}
    assert ("terraform_data.network", "replace") in changed
    assert drift_notices() == [[DRIFT_DETECTED, found.pk]]

    message = compose(event=DRIFT_DETECTED, object_id=found.pk)
    assert message is not None and message.recipients == ["drift-owner@example.com"]
    assert "replace terraform_data.network" in message.body
    assert message.link.endswith(f"/accounts/{account.pk}/#drift")

    # The same drift found again, from the command line: still flagged, not told again.
    # While someone holds the state lock (an operator's apply, say), the check still runs:
    # it neither takes nor waits for the lock.
    out = io.StringIO()
    with state_locked("drifty"), pytest.raises(SystemExit) as exited:
        call_command("account_drift", "drifty", "--wait", "--poll", "0.2", stdout=out)
    assert exited.value.code == 3, out.getvalue()
    assert "drifted: 0 to add" in out.getvalue()
    assert "replace  terraform_data.network" in out.getvalue()
    third = PipelineRun.objects.get(pk=int(out.getvalue().splitlines()[0]))
    assert third.status == RunStatus.SUCCEEDED, third.explanation
    again = drift.current_drift(account)
    assert again is not None and again.run_id == third.pk and not again.notified
    assert len(drift_notices()) == 1

    status = api.get(f"/api/v1/accounts/{account.pk}/drift/").json()
    assert status["drifted"] is True and status["latest"]["run"] == third.pk
    client.force_login(owner)
    page = client.get(f"/accounts/{account.pk}/").content.decode()
    assert "Drifted" in page and "terraform_data.network" in page and "Reconcile" in page
    run_page = client.get(f"/runs/{third.pk}/").content.decode()
    assert "to replace" in run_page and "terraform_data.network" in run_page
    dashboard = client.get("/").content.decode()
    assert 'class="badge failed drift-badge"' in dashboard

    # Reconcile: an update run; the plan replaces, so the approval policy asks an approver.
    answer = api.post(f"/api/v1/accounts/{account.pk}/reconcile/")
    assert answer.status_code == 201, answer.content
    reconcile = answer.json()
    assert reconcile["kind"] == RunKind.UPDATE
    waiting = wait_for_run(reconcile["id"], statuses=(RunStatus.WAITING_APPROVAL,), timeout=240)
    stage = waiting.stages.get(kind="approve_plan")
    assert stage.status == StageStatus.WAITING_APPROVAL
    run_services.decide_stage(stage, user=approver, approve=True, comment="put it back")
    done = wait_for_run(waiting.pk, timeout=240)
    assert done.status == RunStatus.SUCCEEDED, done.explanation
    account.refresh_from_db()
    assert account.status == AccountStatus.READY
    assert drift.current_drift(account) is None  # rebuilt from its code: no longer flagged
    assert api.get(f"/api/v1/accounts/{account.pk}/drift/").json()["drifted"] is False
    assert "drift-badge" not in client.get("/").content.decode()  # the build cleared it

    out = io.StringIO()
    call_command("account_drift", "drifty", "--wait", "--poll", "0.2", stdout=out)
    assert out.getvalue().splitlines()[-1] == "drifty: no drift"
    after = PipelineRun.objects.get(pk=int(out.getvalue().splitlines()[0]))
    assert DriftReport.objects.get(run=after).drifted is False
    assert len(drift_notices()) == 1
    assert api.post(f"/api/v1/accounts/{account.pk}/reconcile/").status_code == 409
