"""Tear down account NAME, as the web page does: the name typed again, the safety rails,
approval per the blueprint's policy; optionally follow the run.

Exit codes: 0 teardown started (or, with --wait, succeeded); 1 it failed or was
cancelled; 2 bad input (a wrong --confirm, an unknown account, a refused rail).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandParser

from accounts_app import decommission, selectors
from accounts_app.production import system_user
from accounts_app.services import RequestInvalid
from pipelines import selectors as run_selectors
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand
from pipelines.models import RunStatus, StageStatus
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
        account = selectors.account_named(options["name"])
        if account is None:
            raise BadInput(f"NAME: no account named {options['name']!r}")
        user = (
            get_user_model().objects.filter(username=options["user"]).first()
            if options["user"]
            else system_user()
        )
        if user is None:
            raise BadInput(f"--user: no user named {options['user']!r}")
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
        if options["wait"] and self._follow(run_id=run.pk, poll=options["poll"]) != (
            RunStatus.SUCCEEDED
        ):
            sys.exit(EXIT_FAILED)

    def _follow(self, *, run_id: int, poll: float) -> str:
        """Print each stage's status change until the run ends; returns the run status."""
        seen: dict[int, tuple[str, int]] = {}
        while True:
            run = run_selectors.run_with_stages(run_id)
            for stage in run.stages.all():
                state = (stage.status, stage.attempt)
                if seen.get(stage.pk) != state and stage.status != StageStatus.PENDING:
                    seen[stage.pk] = state
                    note = f": {stage.explanation}" if stage.explanation else ""
                    self.stderr.write(f"  {stage.kind:<15} {stage.status}{note}")
            if not run.is_active:
                note = f": {run.explanation}" if run.explanation else ""
                self.stderr.write(f"run #{run.pk} {run.status}{note}")
                return run.status
            time.sleep(poll)
