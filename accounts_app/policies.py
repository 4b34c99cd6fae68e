"""Blueprint policies per purpose: which purposes, how long, how many, who skips approval.

Pure functions over pipelines.blueprints.Policy, plus the one quota query.
Services use them to check requests; forms use them to offer only what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from accounts_app.models import CLONE_PURPOSES, Account, AccountStatus, Purpose
from pipelines.blueprints import Blueprint, Policy

# Accounts that no longer count against a quota.
INACTIVE_ACCOUNT_STATUSES = (AccountStatus.REJECTED, AccountStatus.TORN_DOWN)


def allowed_purposes(blueprint: Blueprint) -> list[str]:
    """Purposes a request may name: those with a policy entry, or all when there is none."""
    if not blueprint.policy:
        return list(CLONE_PURPOSES)
    return [purpose for purpose in CLONE_PURPOSES if purpose in blueprint.policy]


def purpose_error(*, blueprint: Blueprint, purpose: str) -> str | None:
    if purpose == Purpose.PRODUCTION:
        return "production is registered as it is (account_register), not requested"
    if purpose not in Purpose.values:
        return f"choose one of {', '.join(CLONE_PURPOSES)}"
    allowed = allowed_purposes(blueprint)
    if purpose not in allowed:
        return (
            f"blueprint {blueprint.name} does not allow {purpose} (allowed: {', '.join(allowed)})"
        )
    return None


@dataclass(frozen=True)
class ExpiryBounds:
    """What a form offers: the default expiry and the latest one allowed (None: no limit)."""

    default: datetime | None
    latest: datetime | None


def expiry_bounds(*, policy: Policy, now: datetime) -> ExpiryBounds:
    return ExpiryBounds(
        default=now + timedelta(days=policy.default_ttl_days) if policy.default_ttl_days else None,
        latest=now + timedelta(days=policy.max_ttl_days) if policy.max_ttl_days else None,
    )


def resolve_expiry(
    *, policy: Policy, purpose: str, expires_at: datetime | None, now: datetime
) -> tuple[datetime | None, str | None]:
    """(the expiry to record, an error message or None). No expiry given: the default."""
    bounds = expiry_bounds(policy=policy, now=now)
    if expires_at is None:
        return bounds.default, None
    if expires_at <= now:
        return expires_at, "must be in the future"
    if bounds.latest is not None and expires_at > bounds.latest:
        return expires_at, f"at most {policy.max_ttl_days} days from now for {purpose} accounts"
    return expires_at, None


def active_count(
    *, owner_id: int, blueprint: str, purpose: str, leaving_out: int | None = None
) -> int:
    """The owner's accounts of this blueprint and purpose that still count against a quota.

    ``leaving_out``: an account id not to count (the one about to start again).
    """
    accounts = Account.objects.filter(
        owner_id=owner_id, blueprint=blueprint, purpose=purpose
    ).exclude(status__in=INACTIVE_ACCOUNT_STATUSES)
    if leaving_out is not None:
        accounts = accounts.exclude(pk=leaving_out)
    return accounts.count()


def quota_error(policy: Policy, *, in_use: int, blueprint: str, purpose: str) -> str | None:
    limit = policy.max_active_per_user
    if limit is None or in_use < limit:
        return None
    return (
        f"quota reached: {in_use} in use, limit {limit} active {purpose} accounts "
        f"of {blueprint} per user"
    )


def auto_approving_groups(*, policy: Policy, roles: Iterable[str]) -> list[str]:
    """The user's roles that the policy auto-approves (empty: the request needs approval)."""
    return sorted(set(roles) & set(policy.auto_approve))
