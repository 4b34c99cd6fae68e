"""Demo data for a local portal: the three roles and a user in each.

Passwords are generated when a user is created (or with --reset-passwords)
and printed once; they are never stored in clear.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts_app.roles import ADMINS, APPROVERS, REQUESTERS, ROLES
from pipelines.blueprints import list_blueprints

DEMO_USERS = (
    ("sales", (REQUESTERS,), False),
    ("qa", (REQUESTERS,), False),
    ("approver", (APPROVERS,), False),
    ("admin", (ADMINS,), True),
)


class Command(BaseCommand):
    help = "Create the roles and the demo users (sales, qa, approver, admin)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset-passwords", action="store_true", help="give every demo user a new password"
        )
        parser.add_argument(
            "--credentials-file",
            help="also write the new credentials to this file (mode 0600), for the start-up banner",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in ROLES}
        created: list[tuple[str, str]] = []
        for username, roles, is_admin in DEMO_USERS:
            user, new = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            user.groups.add(*(groups[role] for role in roles))
            if is_admin and not (user.is_staff and user.is_superuser):
                user.is_staff = user.is_superuser = True
                user.save(update_fields=["is_staff", "is_superuser"])
            if new or options["reset_passwords"]:
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.save(update_fields=["password"])
                created.append((username, password))
        blueprints = ", ".join(f"{b.name} {b.version}" for b in list_blueprints())
        self.stdout.write(f"blueprints available: {blueprints or 'none'}")
        lines = [f"  {username:<9} {password}" for username, password in created]
        if lines and options["credentials_file"]:
            # The start-up banner shows them once, at its end.
            with open(options["credentials_file"], "w", opener=_private_opener) as handle:
                handle.write("\n".join(lines) + "\n")
        elif lines:
            self.stdout.write("demo users (shown once):\n" + "\n".join(lines))
        elif not options["credentials_file"]:
            self.stdout.write(
                "demo users exist (sales, qa, approver, admin); "
                "new passwords: python manage.py seed_demo --reset-passwords"
            )


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
