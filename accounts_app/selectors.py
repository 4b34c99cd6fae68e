"""Reads about accounts."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from accounts_app.models import Account


def visible_accounts(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Account]:
    """Requesters see their own accounts; approvers, admins and staff see all."""
    accounts = Account.objects.select_related("owner")
    if getattr(user, "is_staff", False) or _in_groups(user, {"approvers", "admins"}):
        return accounts
    return accounts.filter(owner_id=user.pk)


def _in_groups(user: AbstractBaseUser | AnonymousUser, names: set[str]) -> bool:
    groups = getattr(user, "groups", None)
    return bool(groups and groups.filter(name__in=names).exists())
