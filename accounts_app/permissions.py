"""Who may do what: plain functions used by views, the API and templates.

Roles are Django groups (accounts_app.roles). A user's group names are loaded
once and cached on the user object, so checking many accounts or runs in one
request costs one query, not one per check.

Roles nest: admins (group ``admins``, staff or superusers) are approvers, and
approvers are requesters.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from accounts_app.models import Account, AccountRequest
from accounts_app.roles import ADMINS, APPROVERS, REQUESTERS
from pipelines.models import PipelineRun

# Whoever asks: a signed-in user, the anonymous user, or nobody (a schedule).
Who = AbstractBaseUser | AnonymousUser | None

_CACHE_ATTR = "_portal_group_names"


def group_names(user: Who) -> frozenset[str]:
    """The names of the user's groups, queried once per user object."""
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    cached: frozenset[str] | None = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))  # type: ignore[union-attr]
        setattr(user, _CACHE_ATTR, cached)
    return cached


def forget_groups(user: Who) -> None:
    """Drop the cached group names (after changing the user's groups)."""
    if user is not None and hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def is_admin(user: Who) -> bool:
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if getattr(user, "is_superuser", False) or getattr(user, "is_staff", False):
        return True
    return ADMINS in group_names(user)


def is_approver(user: Who) -> bool:
    return is_admin(user) or APPROVERS in group_names(user)


def is_requester(user: Who) -> bool:
    return is_approver(user) or REQUESTERS in group_names(user)


def effective_roles(user: Who) -> frozenset[str]:
    """Group names plus the roles the user holds through nesting (an admin is an approver...).

    Used to match a policy's ``auto_approve`` list: if approvers' requests need
    no approval, an admin's do not either.
    """
    roles = set(group_names(user))
    if is_admin(user):
        roles.add(ADMINS)
    if is_approver(user):
        roles.add(APPROVERS)
    if is_requester(user):
        roles.add(REQUESTERS)
    return frozenset(roles)


def is_owner(*, user: Who, account: Account) -> bool:
    return bool(user is not None and user.is_authenticated and account.owner_id == user.pk)


def can_request(user: Who) -> bool:
    return is_requester(user)


def can_start_run(*, user: Who, account: Account) -> bool:
    """Owner or admin; a protected account is run by admins only."""
    if account.protected:
        return is_admin(user)
    return is_admin(user) or is_owner(user=user, account=account)


def can_edit(*, user: Who, account: Account) -> bool:
    """Edit or upgrade the account's config: its owner or an admin; production, admins."""
    if account.protected:
        return is_admin(user)
    return is_admin(user) or is_owner(user=user, account=account)


def can_upgrade_all(user: Who) -> bool:
    """Upgrade every account of a blueprint at once."""
    return is_admin(user)


def can_decide(user: Who) -> bool:
    """Approve or reject requests and plans."""
    return is_approver(user)


def can_retry(*, user: Who, run: PipelineRun) -> bool:
    # Protected accounts are admins-only too, which the admin rule already covers.
    return is_admin(user)


def can_cancel(*, user: Who, run: PipelineRun) -> bool:
    """Admins, and whoever started the run (requesters cancel their own runs)."""
    if is_admin(user):
        return True
    started_it = user is not None and user.is_authenticated and run.created_by_id == user.pk
    return started_it and not run.account.protected


def can_change_request(*, user: Who, account_request: AccountRequest) -> bool:
    """Withdraw or send again: the requester only."""
    return bool(
        user is not None and user.is_authenticated and account_request.requested_by_id == user.pk
    )


def roles_for_templates(user: Who) -> dict[str, bool]:
    """Flags for templates, which cannot call functions with arguments."""
    return {
        "is_admin": is_admin(user),
        "is_approver": is_approver(user),
        "is_requester": is_requester(user),
        "can_request": can_request(user),
        "can_decide": can_decide(user),
    }
