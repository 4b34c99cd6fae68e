"""Which accounts the drift sweep checks, and when: per purpose, daily by default."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from accounts_app import drift
from accounts_app.models import AccountStatus, Purpose
from pipelines.models import PipelineRun, RunKind, RunStatus
from tests.factories import AccountFactory, PipelineRunFactory

pytestmark = pytest.mark.django_db


def checked(account: Any, *, hours_ago: float) -> None:
    run = PipelineRunFactory(account=account, kind=RunKind.DRIFT_CHECK, status=RunStatus.SUCCEEDED)
    PipelineRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(hours=hours_ago)
    )


def test_ready_clones_are_due_once_their_purposes_interval_passed(settings: Any) -> None:
    never = AccountFactory(name="never-checked", status=AccountStatus.READY)
    yesterday = AccountFactory(name="checked-25h", status=AccountStatus.READY)
    checked(yesterday, hours_ago=25)
    recent = AccountFactory(name="checked-23h", status=AccountStatus.READY)
    checked(recent, hours_ago=23)
    AccountFactory(name="building", status=AccountStatus.PROVISIONING)
    AccountFactory(name="gone", status=AccountStatus.TORN_DOWN)
    AccountFactory(name="prod", status=AccountStatus.READY, purpose=Purpose.PRODUCTION)

    due = drift.due_accounts(now=timezone.now())

    assert [a.name for a in due] == ["never-checked", "checked-25h"]
    started = drift.check_due()
    assert {run.account.name for run in started} == {"never-checked", "checked-25h"}
    assert all(run.trigger == "schedule" for run in started)
    assert [s.kind for s in started[0].stages.all()] == ["render", "drift_plan"]
    assert drift.check_due() == []  # both busy now, and checked: nothing to start
    assert {never.pk, yesterday.pk} == {run.account_id for run in started}


def test_a_purpose_may_be_checked_more_often() -> None:
    hourly = AccountFactory(
        name="hourly", blueprint="drift-often", config={}, status=AccountStatus.READY
    )
    checked(hourly, hours_ago=2)
    fresh = AccountFactory(
        name="hourly-fresh", blueprint="drift-often", config={}, status=AccountStatus.READY
    )
    checked(fresh, hours_ago=0.5)
    assert [a.name for a in drift.due_accounts(now=timezone.now())] == ["hourly"]


def test_the_sweeps_are_scheduled() -> None:
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["check-drift"]["task"] == "accounts_app.scheduled.check_drift"
    assert schedule["check-drift"]["schedule"].total_seconds() == 600
    assert schedule["remind-expiry"]["task"] == "accounts_app.scheduled.remind_expiry"
    assert "accounts_app.scheduled" in settings.CELERY_IMPORTS
    assert [d.total_seconds() for d in settings.PORTAL_EXPIRY_REMINDERS] == [259200, 86400, 3600]
