"""Extend an account's expiry, as its owner would from the account page.

Within the purpose's max_ttl_days (from the account's creation) the new expiry applies
at once; beyond it, the extension waits for an approver (decided in the portal or with
POST /api/v1/extensions/{id}/approve/). Exit codes: 0 extended or asked; 2 bad input.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import CommandParser

from accounts_app import expiry
from accounts_app.management.commands._arguments import named_account, named_user
from accounts_app.models import RequestStatus
from pipelines.cli import BadInput, PortalCommand
from portal.errors import PortalError


def parse_until(text: str) -> datetime:
    """``2027-03-01`` (00:00 UTC) or an ISO 8601 time; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"--until: {text!r} is not a date or time (e.g. 2027-03-01 or 2027-03-01T12:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Command(PortalCommand):
    help = "Extend account NAME's expiry to --until (beyond its policy's limit: asks an approver)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--until", required=True, help="the new expiry: a date or ISO time")
        parser.add_argument("--reason", default="")
        parser.add_argument(
            "--as", dest="as_user", default="", help="who asks (default: the portal's system user)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        account = named_account(options["name"])
        user = named_user(options["as_user"], flag="--as")
        try:
            extension = expiry.extend(
                account=account,
                user=user,
                expires_at=parse_until(options["until"]),
                reason=options["reason"],
            )
        except PortalError as exc:
            field = "--until" if exc.field == "expires_at" else ""
            raise BadInput(f"{field}: {exc.message}" if field else exc.message) from exc
        if extension.status == RequestStatus.PENDING:
            self.stdout.write(
                f"extension #{extension.pk} to {extension.expires_at:%Y-%m-%d %H:%M} UTC is "
                "beyond the policy's limit: it waits for an approver"
            )
        else:
            self.stdout.write(
                f"{account.name} now expires at {extension.expires_at:%Y-%m-%d %H:%M} UTC"
            )
