"""What the account commands' arguments name: an account, and the user who asks.

(A leading underscore: Django lists no command for this module.)
"""

from __future__ import annotations

import argparse

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.base import CommandParser

from accounts_app import selectors
from accounts_app.models import Account
from accounts_app.production import system_user
from pipelines.cli import BadInput


def named_account(name: str) -> Account:
    account = selectors.account_named(name)
    if account is None:
        raise BadInput(f"no account named {name!r}")
    return account


def named_user(username: str, *, flag: str) -> User:
    """The user ``flag`` names; the portal's system user when it names none."""
    if not username:
        return system_user()
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise BadInput(f"{flag}: no user named {username!r}")
    return user


def add_update_arguments(parser: CommandParser) -> None:
    """``--user`` (who asks, for the approval policy), ``--wait`` and ``--poll``: what the
    commands that start update runs share."""
    parser.add_argument(
        "--user",
        default="",
        help="username the update is asked by, for the approval policy "
        "(default: the portal's system user, whose updates an approver decides)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the runs until they end")
    parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
