"""What the account page shows of an account's life after creation: expiry and drift."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from accounts_app import drift, expiry, permissions
from accounts_app.models import Account, RequestStatus
from accounts_app.permissions import Who

EXTENSIONS_SHOWN = 5
# The date the extend form suggests: a week after the current expiry, within the limit.
SUGGESTED_EXTENSION = timedelta(days=7)


def account_page_facts(
    *, user: Who, account: Account, now: datetime | None = None
) -> dict[str, Any]:
    """Expiry and drift facts for the account page (a fixed number of queries)."""
    now = now or timezone.now()
    latest = drift.latest_report(account)
    current = drift.drift_now(account=account, latest=latest)
    shown = current or latest
    limit = expiry.extension_limit(account)
    extensions = expiry.extensions_of(account, limit=EXTENSIONS_SHOWN)
    suggested = None
    if account.expires_at is not None:
        suggested = account.expires_at + SUGGESTED_EXTENSION
        if limit is not None and account.expires_at < limit < suggested:
            suggested = limit
    return {
        "drift_report": latest,
        "drift_current": current,
        "drift_summary": drift.drift_summary(shown) if shown is not None else None,
        "extension_limit": limit,
        "extensions": extensions,
        "extension_pending": next(
            (e for e in extensions if e.status == RequestStatus.PENDING), None
        ),
        "can_extend": permissions.can_start_run(user=user, account=account)
        and not account.expiry_exempt
        and not account.protected
        and account.status not in expiry.FINAL_STATUSES,
        "extend_suggested": suggested,
        "extend_min": now + timedelta(days=1),
        "expired": account.expires_at is not None and account.expires_at <= now,
    }
