"""Tear down account NAME, as the web page does: the name typed again, the safety rails,
approval per the blueprint's policy; optionally follow the run.

Exit codes: 0 teardown started (or, with --wait, succeeded); 1 it failed or was
cancelled; 2 bad input (a wrong --confirm, an unknown account, a refused rail).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import CommandParser

from accounts_app import decommission
from accounts_app.management.commands._arguments import named_account, named_user
from accounts_app.services import RequestInvalid
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, follow_run
from pipelines.models import RunStatus
from portal.errors import PortalError


class Command(PortalCommand):
    help = "Tear down account NAME: destroy, sweep what it left, close its cloud account."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--confirm", required=True, help="the account's name again, as the web page asks"
        )
        parser.add_argument("--reason", default="", help="why (kept with the account's record)")
        parser.add_argument(
            "--user", default="", help="who asks (default: the portal's system user)"
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        account = named_account(options["name"])
        user = named_user(options["user"], flag="--user")
        try:
            run = decommission.request_teardown(
                account=account, user=user, confirm=options["confirm"], reason=options["reason"]
            )
        except RequestInvalid as exc:
            raise BadInput(
                "\n".join(f"--{field}: {'; '.join(msgs)}" for field, msgs in exc.errors.items())
            ) from exc
        except PortalError as exc:
            raise BadInput(exc.message) from exc
        self.stderr.write(f"teardown of {account.name} started")
        self.stdout.write(str(run.pk))
        if options["wait"] and follow_run(
            run_id=run.pk, poll=options["poll"], write=self.stderr.write
        ) != (RunStatus.SUCCEEDED):
            sys.exit(EXIT_FAILED)
