"""The scheduled parity check: a clone that falls out of parity is flagged, its owner told once."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from accounts_app import notifications, tasks
from accounts_app.models import AccountStatus, ParityReport, Purpose
from accounts_app.parity import check_all
from pipelines.models import OutboxMessage
from portal.celery import app as celery_app
from tests.factories import AccountFactory, UserFactory
from tests.integration.test_parity_report import PROD_CONFIG, clone, resources

pytestmark = pytest.mark.django_db


@pytest.fixture
def production() -> Any:
    return AccountFactory(
        name="prod",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
        config=PROD_CONFIG,
        resources=resources(),
    )


def test_every_ready_clone_is_checked_and_each_change_reported_once(production: Any) -> None:
    owner = UserFactory(email="qa-owner@example.com")
    drifting = clone(name="qa-drift", purpose=Purpose.QA, owner=owner)
    clone(name="qa-fine", purpose=Purpose.QA)
    AccountFactory(name="qa-building", status=AccountStatus.PROVISIONING)
    AccountFactory(name="ro-none", blueprint="render-only", config={}, status=AccountStatus.READY)

    assert check_all() == []  # in parity: nothing to tell
    assert ParityReport.objects.count() == 2  # the two ready clones with a production

    drifting.config = {**drifting.config, "dns_zone": "qa.internal"}
    drifting.save(update_fields=["config"])
    [changed] = check_all()
    assert changed.account == drifting and not changed.in_parity
    assert check_all() == []  # still out of parity, the same way: told once already

    production.config = {**production.config, "instance_size": "medium"}  # not a qa rule
    cache = {"address": "terraform_data.cache", "type": "terraform_data", "values": {}}
    production.resources = [*production.resources, cache]
    production.save(update_fields=["config", "resources"])
    # Production changed: a new difference for both clones, a new notice for each.
    reports = {report.account.name: report for report in check_all()}
    assert set(reports) == {"qa-drift", "qa-fine"}
    again = reports["qa-drift"]

    message = notifications.compose(event=notifications.PARITY_CHANGED, object_id=again.pk)
    assert message is not None
    assert message.recipients == ["qa-owner@example.com"]
    assert message.subject == "[portal] qa-drift is out of parity with production"
    assert "Differs: dns_zone, resource terraform_data.cache" in message.body
    assert "qa.internal" not in message.body  # names, never values
    assert message.link.endswith(f"/accounts/{drifting.pk}/#parity")


def test_the_task_queues_one_notice_per_change(production: Any, monkeypatch) -> None:
    clone(name="qa-task", purpose=Purpose.QA, config={"dns_zone": "qa.internal"})
    monkeypatch.setattr(celery_app, "send_task", lambda name, args, **options: None)
    tasks.check_parity()
    tasks.check_parity()
    queued = OutboxMessage.objects.filter(task=tasks.notify.name)
    assert [args[0] for args in queued.values_list("args", flat=True)] == [
        notifications.PARITY_CHANGED
    ]


def test_the_schedule_runs_daily_by_default() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["check-parity"]
    assert entry["task"] == "accounts_app.tasks.check_parity"
    assert entry["schedule"].total_seconds() == 86400
