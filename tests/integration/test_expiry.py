"""Expiry: reminders before it (each threshold once, with an injected clock), extensions
within and beyond the purpose's limit (API and pages), exemptions, the expired trigger."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts_app import expiry
from accounts_app.models import AccountStatus, ExpiryReminder, ExtensionRequest, RequestStatus
from accounts_app.notifications import (
    EXPIRY_REMINDER,
    EXTENSION_DECIDED,
    EXTENSION_NEEDS_APPROVAL,
    compose,
)
from accounts_app.tasks import notify
from pipelines import services as run_services
from pipelines.models import OutboxMessage, RunKind, Trigger
from tests.conftest import token_client
from tests.factories import AccountFactory, UserFactory

pytestmark = pytest.mark.django_db

EXPIRES = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)


def notices(event: str) -> list[int]:
    queued = OutboxMessage.objects.filter(task=notify.name).order_by("pk")
    return [args[1] for args in queued.values_list("args", flat=True) if args[0] == event]


def ready_account(**fields: Any) -> Any:
    defaults = {"status": AccountStatus.READY, "expires_at": EXPIRES, "purpose": "qa"}
    return AccountFactory(**{**defaults, **fields})


def test_one_reminder_at_each_threshold_and_never_twice() -> None:
    owner = UserFactory(username="olga", email="olga@example.com")
    account = ready_account(name="remind-me", owner=owner)

    def at(before: timedelta) -> list[int]:
        sent = expiry.send_reminders(now=EXPIRES - before)
        return [reminder.threshold_seconds for reminder in sent]

    assert at(4 * DAY) == []  # not yet
    assert at(3 * DAY - MINUTE) == [3 * 86400]
    assert at(3 * DAY - 2 * MINUTE) == []  # the next sweep: sent already
    assert at(2 * DAY) == []  # still in the 3-day window
    assert at(DAY - MINUTE) == [86400]
    assert at(12 * HOUR) == []
    assert at(HOUR - MINUTE) == [3600]
    assert at(MINUTE) == []
    assert at(-MINUTE) == []  # expired: the expiry sweep's turn, no reminder

    reminders = list(ExpiryReminder.objects.filter(account=account).order_by("sent_at"))
    assert [r.threshold_seconds for r in reminders] == [259200, 86400, 3600]
    assert notices(EXPIRY_REMINDER) == [r.pk for r in reminders]  # mail and webhook, once each
    message = compose(event=EXPIRY_REMINDER, object_id=reminders[1].pk)
    assert message is not None
    assert message.subject == "[portal] remind-me expires in 1 day"
    assert message.recipients == ["olga@example.com"]
    assert "expires at 2027-03-10 12:00 UTC" in message.body
    assert message.link.endswith(f"/accounts/{account.pk}/#expiry")


def test_a_late_first_sweep_sends_only_the_nearest_reminder_and_an_extension_its_own() -> None:
    account = ready_account(name="late-sweep")
    [only] = expiry.send_reminders(now=EXPIRES - 20 * HOUR)
    assert only.threshold_seconds == 86400  # never "expires in 3 days" 20 hours before

    account.expires_at = EXPIRES + 10 * DAY
    account.save(update_fields=["expires_at"])
    assert compose(event=EXPIRY_REMINDER, object_id=only.pk) is None  # no longer true
    [again] = expiry.send_reminders(now=EXPIRES + 10 * DAY - 2 * DAY)
    assert (again.threshold_seconds, again.expires_at) == (259200, EXPIRES + 10 * DAY)


def test_thresholds_are_a_setting(settings: Any) -> None:
    settings.PORTAL_EXPIRY_REMINDERS = (timedelta(hours=6),)
    ready_account(name="six-hours")
    assert expiry.send_reminders(now=EXPIRES - DAY) == []
    [sent] = expiry.send_reminders(now=EXPIRES - 5 * HOUR)
    assert sent.threshold_seconds == 6 * 3600


def test_exempt_protected_and_gone_accounts_get_no_reminder() -> None:
    ready_account(name="exempt-one", expiry_exempt=True)
    ready_account(name="protected-one", protected=True)
    ready_account(name="gone-one", status=AccountStatus.TORN_DOWN)
    assert expiry.send_reminders(now=EXPIRES - HOUR + MINUTE) == []


def test_owner_extends_within_the_limit_at_once(sally: Any) -> None:
    account = ready_account(name="extend-me", owner=sally, expires_at=timezone.now() + 2 * DAY)
    limit = expiry.extension_limit(account)
    assert limit == account.created_at + timedelta(days=30)  # qa: max_ttl_days 30

    answer = token_client(sally).post(
        f"/api/v1/accounts/{account.pk}/extend/",
        {"expires_at": (limit - HOUR).isoformat(), "reason": "demo moved"},
        format="json",
    )

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["status"] == RequestStatus.AUTO_APPROVED
    assert body["account_expires_at"] == body["expires_at"]
    account.refresh_from_db()
    assert account.expires_at == limit - HOUR
    assert notices(EXTENSION_NEEDS_APPROVAL) == []


def test_beyond_the_limit_an_approver_decides_never_the_one_who_asked(
    sally: Any, april: Any
) -> None:
    account = ready_account(name="longer", owner=sally, expires_at=timezone.now() + 2 * DAY)
    before = account.expires_at
    wanted = expiry.extension_limit(account) + 10 * DAY
    owner_api, approver_api = token_client(sally), token_client(april)

    answer = owner_api.post(
        f"/api/v1/accounts/{account.pk}/extend/",
        {"expires_at": wanted.isoformat(), "reason": "the customer's pilot runs longer"},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    extension = answer.json()
    assert extension["status"] == RequestStatus.PENDING
    account.refresh_from_db()
    assert account.expires_at == before  # nothing moves before the decision
    assert notices(EXTENSION_NEEDS_APPROVAL) == [extension["id"]]
    message = compose(event=EXTENSION_NEEDS_APPROVAL, object_id=extension["id"])
    assert message is not None and "april@example.com" in message.recipients

    # One pending extension at a time; the requester may not decide.
    again = owner_api.post(
        f"/api/v1/accounts/{account.pk}/extend/", {"expires_at": wanted.isoformat()}, format="json"
    )
    assert again.status_code == 409
    assert owner_api.post(f"/api/v1/extensions/{extension['id']}/approve/").status_code == 403
    listed = approver_api.get("/api/v1/extensions/?status=pending").json()
    assert [item["id"] for item in listed["results"]] == [extension["id"]]
    assert approver_api.post(f"/api/v1/extensions/{extension['id']}/reject/").status_code == 400

    decided = approver_api.post(
        f"/api/v1/extensions/{extension['id']}/approve/", {"comment": "ok"}, format="json"
    )
    assert decided.status_code == 200, decided.content
    assert decided.json()["status"] == RequestStatus.APPROVED
    assert decided.json()["decided_by"] == "april"
    account.refresh_from_db()
    assert account.expires_at == wanted
    assert notices(EXTENSION_DECIDED) == [extension["id"]]


def test_an_approver_does_not_approve_their_own_extension(april: Any) -> None:
    account = ready_account(name="own-ext", owner=april, expires_at=timezone.now() + DAY)
    extension = expiry.extend(
        account=account,
        user=april,
        expires_at=expiry.extension_limit(account) + DAY,
    )
    answer = token_client(april).post(f"/api/v1/extensions/{extension.pk}/approve/")
    assert answer.status_code == 409
    assert "your own" in answer.json()["detail"]


def test_bad_extensions_name_the_field(sally: Any) -> None:
    account = ready_account(name="bad-ext", owner=sally, expires_at=timezone.now() + 2 * DAY)
    api = token_client(sally)
    url = f"/api/v1/accounts/{account.pk}/extend/"
    past = api.post(url, {"expires_at": "2020-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and past.json() == {"expires_at": ["must be in the future"]}
    earlier = api.post(url, {"expires_at": (timezone.now() + DAY).isoformat()}, format="json")
    assert earlier.status_code == 400
    assert "later than the current expiry" in earlier.json()["expires_at"][0]
    assert api.post(url, {"expires_at": "soon"}, format="json").status_code == 400
    someone = ready_account(name="not-yours", expires_at=timezone.now() + DAY)
    assert api.post(f"/api/v1/accounts/{someone.pk}/extend/", {}, format="json").status_code == 404


def test_admins_exempt_an_account_from_expiry(sally: Any, adam: Any) -> None:
    account = ready_account(name="keep-me", owner=sally, expires_at=timezone.now() - MINUTE)
    url = f"/api/v1/accounts/{account.pk}/exempt/"
    assert token_client(sally).post(url, {"exempt": True}, format="json").status_code == 403

    answer = token_client(adam).post(url, {"exempt": True}, format="json")

    assert answer.status_code == 200 and answer.json()["expiry_exempt"] is True
    assert run_services.expire_accounts() == []  # past its date, yet never torn down
    assert expiry.send_reminders(now=account.expires_at - MINUTE) == []
    extend = token_client(sally).post(
        f"/api/v1/accounts/{account.pk}/extend/",
        {"expires_at": (timezone.now() + DAY).isoformat()},
        format="json",
    )
    assert extend.status_code == 409 and "exempt" in extend.json()["detail"]

    token_client(adam).post(url, {"exempt": False}, format="json")
    [run] = run_services.expire_accounts()
    assert (run.kind, run.trigger) == (RunKind.TEARDOWN, Trigger.EXPIRED)


def test_the_account_page_shows_the_expiry_with_its_zone_and_a_countdown(
    client: Any, sally: Any
) -> None:
    account = ready_account(name="page-exp", owner=sally, expires_at=timezone.now() + 2 * DAY)
    client.force_login(sally)
    page = client.get(f"/accounts/{account.pk}/").content.decode()
    assert f"{account.expires_at:%Y-%m-%d %H:%M} UTC" in page
    assert 'data-countdown="' in page and "in 1\xa0day" in page
    assert 'id="extend-form"' in page
    dashboard = client.get("/").content.decode()
    assert f"{account.expires_at:%Y-%m-%d %H:%M} UTC" in dashboard


def test_extend_from_the_page_within_and_beyond_the_limit(
    client: Any, sally: Any, april: Any
) -> None:
    account = ready_account(name="web-ext", owner=sally, expires_at=timezone.now() + DAY)
    limit = expiry.extension_limit(account)
    assert limit is not None
    client.force_login(sally)
    url = f"/accounts/{account.pk}/extend/"

    within = (limit - DAY).date()
    response = client.post(url, {"expires_on": within.isoformat()}, follow=True)
    account.refresh_from_db()
    assert account.expires_at == datetime.combine(within, datetime.min.time(), tzinfo=UTC)
    assert "Extended web-ext to" in response.content.decode()

    beyond = (limit + 5 * DAY).date()
    response = client.post(url, {"expires_on": beyond.isoformat(), "reason": "pilot"}, follow=True)
    assert "waits for an approver" in response.content.decode()
    pending = ExtensionRequest.objects.get(account=account, status=RequestStatus.PENDING)

    client.force_login(april)
    approvals = client.get("/approvals/").content.decode()
    assert f'id="extension-{pending.pk}"' in approvals and "pilot" in approvals
    client.post(f"/approvals/extensions/{pending.pk}/approve/", {"comment": ""})
    account.refresh_from_db()
    assert account.expires_at == datetime.combine(beyond, datetime.min.time(), tzinfo=UTC)

    assert client.post(url, {"expires_on": beyond.isoformat()}).status_code == 403  # not hers
    client.force_login(sally)
    response = client.post(url, {"expires_on": "not a date"}, follow=True)
    assert "Extend to: Enter a valid date." in response.content.decode()
    client.force_login(UserFactory(username="other", roles=["requesters"]))
    assert client.post(url, {"expires_on": beyond.isoformat()}).status_code == 404


def test_a_run_started_by_expiry_says_expired(client: Any, adam: Any) -> None:
    account = ready_account(name="expired-one", expires_at=timezone.now() - MINUTE)
    [run] = run_services.expire_accounts()
    assert run.trigger == Trigger.EXPIRED
    client.force_login(adam)
    page = client.get(f"/accounts/{account.pk}/").content.decode()
    assert "Expired" in page
    assert token_client(adam).get(f"/api/v1/runs/{run.pk}/").json()["trigger"] == "expired"


def test_extend_from_the_command_line(sally: Any) -> None:
    account = ready_account(name="cli-ext", owner=sally, expires_at=timezone.now() + DAY)
    limit = expiry.extension_limit(account)
    assert limit is not None
    out = io.StringIO()
    call_command("account_extend", "cli-ext", "--until", f"{limit.date()}", stdout=out)
    account.refresh_from_db()
    assert account.expires_at == datetime.combine(limit.date(), datetime.min.time(), tzinfo=UTC)
    expected = f"cli-ext now expires at {account.expires_at:%Y-%m-%d} 00:00 UTC"
    assert out.getvalue().strip() == expected

    out = io.StringIO()
    beyond = (limit + 3 * DAY).isoformat()
    call_command("account_extend", "cli-ext", "--until", beyond, "--reason", "x", stdout=out)
    assert "waits for an approver" in out.getvalue()
    assert ExtensionRequest.objects.get(account=account, status=RequestStatus.PENDING)

    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("account_extend", "cli-ext", "--until", "someday", stderr=err)
    assert exited.value.code == 2 and "--until: 'someday' is not a date" in err.getvalue()
    with pytest.raises(SystemExit) as exited:
        call_command("account_extend", "nobody-here", "--until", beyond, stderr=err)
    assert exited.value.code == 2


def test_an_extension_whose_date_has_passed_is_not_approved(sally: Any, april: Any) -> None:
    account = ready_account(name="too-late", owner=sally, expires_at=timezone.now() + DAY)
    extension = ExtensionRequest.objects.create(
        account=account, requested_by=sally, expires_at=timezone.now() - MINUTE
    )
    answer = token_client(april).post(f"/api/v1/extensions/{extension.pk}/approve/")
    assert answer.status_code == 409 and "has passed" in answer.json()["detail"]
    account.refresh_from_db()
    assert account.expires_at > timezone.now()
