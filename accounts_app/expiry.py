"""Expiry: reminders before an account expires, extensions, and exemptions.

- Reminders: ``send_reminders`` (the schedule's job, with an injectable ``now``) sends
  the owner one reminder per threshold (``PORTAL_EXPIRY_REMINDERS``, default 3 days,
  1 day and 1 hour before) and expiry date, by mail and webhook; each one sent is kept
  as an ``ExpiryReminder``, so it is never sent twice. An extended expiry gets its own.
- Extensions: the owner (or an admin) moves the expiry later, at once up to the
  purpose's ``max_ttl_days`` counted from the account's creation; beyond that the
  extension waits for an approver (never the one who asked, unless
  ``PORTAL_ALLOW_SELF_APPROVAL``). Every extension is kept for the record.
- Exemptions: an admin takes an account off expiry altogether (no reminders, no
  expiry teardown), or puts it back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts_app import notification_queue, selectors
from accounts_app.models import (
    Account,
    AccountStatus,
    ExpiryReminder,
    ExtensionRequest,
    Purpose,
    RequestStatus,
)
from accounts_app.notifications import (
    EXPIRY_REMINDER,
    EXTENSION_DECIDED,
    EXTENSION_NEEDS_APPROVAL,
)
from accounts_app.services import RequestInvalid, RequestRefused
from pipelines.blueprints import BlueprintError, load_blueprint

# Accounts an expiry still applies to (the expiry sweep tears down ready and failed ones).
EXPIRING_STATUSES = (AccountStatus.PROVISIONING, AccountStatus.READY, AccountStatus.FAILED)
# Accounts whose expiry can no longer be moved.
FINAL_STATUSES = (AccountStatus.REJECTED, AccountStatus.TEARING_DOWN, AccountStatus.TORN_DOWN)
MAX_REASON = 5000


# --- reminders -------------------------------------------------------------------------------


def due_threshold(
    *, expires_at: datetime, now: datetime, thresholds: tuple[timedelta, ...]
) -> timedelta | None:
    """The reminder due now: the shortest threshold already reached, before expiry.

    An account that is already inside the 1-day window when first seen gets the
    1-day reminder only, never "expires in 3 days" a few hours before it goes.
    """
    remaining = expires_at - now
    if remaining <= timedelta(0):
        return None
    reached = [threshold for threshold in thresholds if remaining <= threshold]
    return min(reached) if reached else None


def send_reminders(
    *, now: datetime | None = None, thresholds: tuple[timedelta, ...] | None = None
) -> list[ExpiryReminder]:
    """Queue the reminders due now, each at most once; returns the ones sent."""
    now = now or timezone.now()
    thresholds = thresholds if thresholds is not None else tuple(settings.PORTAL_EXPIRY_REMINDERS)
    if not thresholds:
        return []
    candidates = Account.objects.filter(
        expires_at__gt=now,
        expires_at__lte=now + max(thresholds),
        expiry_exempt=False,
        protected=False,
        status__in=EXPIRING_STATUSES,
    )
    sent = []
    for account in candidates.order_by("expires_at", "pk"):
        assert account.expires_at is not None
        threshold = due_threshold(expires_at=account.expires_at, now=now, thresholds=thresholds)
        if threshold is None:
            continue
        try:
            with transaction.atomic():
                reminder, created = ExpiryReminder.objects.get_or_create(
                    account=account,
                    threshold_seconds=int(threshold.total_seconds()),
                    expires_at=account.expires_at,
                    defaults={"sent_at": now},
                )
                if created:
                    notification_queue.queue(event=EXPIRY_REMINDER, object_id=reminder.pk)
        except IntegrityError:
            continue  # another sweep sent it at the same moment
        if created:
            sent.append(reminder)
    return sent


# --- extensions ------------------------------------------------------------------------------


def extension_limit(account: Account) -> datetime | None:
    """The latest expiry an owner may set alone: creation + the purpose's max_ttl_days."""
    try:
        policy = load_blueprint(account.blueprint).policy_for(account.purpose)
    except BlueprintError:
        return None
    if not policy.max_ttl_days:
        return None
    return account.created_at + timedelta(days=policy.max_ttl_days)


def _as_aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def _check_extendable(account: Account) -> None:
    if account.protected or account.purpose == Purpose.PRODUCTION:
        raise RequestRefused(f"account {account.name} is protected: it has no expiry")
    if account.expiry_exempt:
        raise RequestRefused(f"account {account.name} is exempt from expiry: nothing to extend")
    if account.status in FINAL_STATUSES:
        raise RequestRefused(
            f"account {account.name} is {account.get_status_display().lower()}: "
            "its expiry can no longer be moved"
        )


def extend(
    *, account: Account, user: User, expires_at: datetime, reason: str = ""
) -> ExtensionRequest:
    """Move the account's expiry to ``expires_at``: at once within the policy's limit
    (the extension is auto-approved), else as a request an approver decides.

    Callers check ``permissions.can_start_run`` (owner or admin). Raises RequestInvalid
    naming ``expires_at`` or ``reason``, RequestRefused when the account cannot be
    extended or an extension of it already waits for a decision.
    """
    now = timezone.now()
    wanted = _as_aware(expires_at)
    reason = (reason or "").strip()
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        _check_extendable(locked)
        if wanted <= now:
            raise RequestInvalid({"expires_at": ["must be in the future"]})
        if locked.expires_at is not None and wanted <= locked.expires_at:
            raise RequestInvalid(
                {
                    "expires_at": [
                        f"must be later than the current expiry "
                        f"{locked.expires_at:%Y-%m-%d %H:%M} UTC"
                    ]
                }
            )
        if len(reason) > MAX_REASON:
            raise RequestInvalid({"reason": [f"at most {MAX_REASON} characters"]})
        waiting = locked.extensions.filter(status=RequestStatus.PENDING).first()
        if waiting is not None:
            raise RequestRefused(
                f"extension #{waiting.pk} of {locked.name} waits for an approver: "
                "wait for its decision"
            )
        limit = extension_limit(locked)
        extension = ExtensionRequest(
            account=locked,
            requested_by=user,
            previous_expires_at=locked.expires_at,
            expires_at=wanted,
            reason=reason,
        )
        if limit is None or wanted <= limit:
            extension.status = RequestStatus.AUTO_APPROVED
            extension.decided_at = now
            extension.comment = (
                "within the policy's max_ttl_days" if limit is not None else "no limit in policy"
            )
            extension.save()
            locked.expires_at = wanted
            locked.save(update_fields=["expires_at", "updated_at"])
        else:
            extension.save()
            notification_queue.queue(event=EXTENSION_NEEDS_APPROVAL, object_id=extension.pk)
    account.refresh_from_db()
    return extension


def decide_extension(
    *, extension: ExtensionRequest, user: User, approve: bool, comment: str = ""
) -> ExtensionRequest:
    """Approve or reject a pending extension (four-eyes). Callers check ``can_decide``."""
    comment = (comment or "").strip()
    if not approve and not comment:
        raise RequestInvalid({"comment": ["a rejection needs a comment saying why"]})
    with transaction.atomic():
        locked = (
            ExtensionRequest.objects.select_for_update()
            .select_related("account")
            .get(pk=extension.pk)
        )
        if locked.status != RequestStatus.PENDING:
            raise RequestRefused(
                f"extension #{locked.pk} is already {locked.get_status_display().lower()}"
            )
        if locked.requested_by_id == user.pk and not settings.PORTAL_ALLOW_SELF_APPROVAL:
            raise RequestRefused(f"extension #{locked.pk} is your own: another approver decides it")
        account = Account.objects.select_for_update().get(pk=locked.account_id)
        if approve:
            _check_extendable(account)
            if locked.expires_at <= timezone.now():
                raise RequestRefused(
                    f"extension #{locked.pk} asked for {locked.expires_at:%Y-%m-%d %H:%M} UTC, "
                    "which has passed: reject it and ask for a later date"
                )
            account.expires_at = locked.expires_at
            account.save(update_fields=["expires_at", "updated_at"])
        locked.status = RequestStatus.APPROVED if approve else RequestStatus.REJECTED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.comment = comment
        locked.save(update_fields=["status", "decided_by", "decided_at", "comment"])
        notification_queue.queue(event=EXTENSION_DECIDED, object_id=locked.pk)
    return locked


def set_exempt(*, account: Account, exempt: bool) -> Account:
    """Exempt the account from expiry, or put it back (callers check ``is_admin``)."""
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        if locked.protected:
            raise RequestRefused(f"account {locked.name} is protected: it has no expiry")
        locked.expiry_exempt = exempt
        locked.save(update_fields=["expiry_exempt", "updated_at"])
    return locked


def pending_extensions() -> list[ExtensionRequest]:
    """Extensions waiting for an approver, oldest first (the approvals page)."""
    return list(
        ExtensionRequest.objects.filter(status=RequestStatus.PENDING)
        .select_related("account", "requested_by")
        .order_by("created_at", "pk")
    )


def visible_extension(*, user: User, extension_id: int) -> ExtensionRequest | None:
    """An extension of an account the user may see, or None."""
    accounts = selectors.visible_accounts(user)
    return (
        ExtensionRequest.objects.select_related("account", "requested_by", "decided_by")
        .filter(pk=extension_id, account__in=accounts)
        .first()
    )


def extensions_of(account: Account, *, limit: int = 10) -> list[ExtensionRequest]:
    """The account's latest extensions, newest first (the account page)."""
    return list(
        account.extensions.select_related("requested_by", "decided_by").order_by(
            "-created_at", "-pk"
        )[:limit]
    )


def visible_extensions(
    *, user: User, status: str | None = None, account: int | None = None
) -> QuerySet[ExtensionRequest]:
    """Extensions of the accounts the user may see, newest first, optionally filtered."""
    found = ExtensionRequest.objects.select_related(
        "account", "account__owner", "requested_by", "decided_by"
    ).filter(account__in=selectors.visible_accounts(user))
    if status:
        found = found.filter(status=status)
    if account:
        found = found.filter(account_id=account)
    return found.order_by("-created_at", "-pk")
