"""Edit account NAME's config: print the diff of its Terraform, then start an update run.

Exit codes, as account_provision's: 0 run started (or, with --wait, succeeded); 1 the run
failed or was cancelled; 2 bad input (every problem on its own line).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandParser

from accounts_app import updates
from accounts_app.management.commands._arguments import (
    add_update_arguments,
    named_account,
    named_user,
)
from accounts_app.services import RequestInvalid
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, follow_run, read_config_file
from pipelines.models import RunStatus
from portal.errors import PortalError


class Command(PortalCommand):
    help = "Edit account NAME's config: print the diff, then start an update run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--config", required=True, help="YAML file of parameter values")
        add_update_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        config = read_config_file(options["config"])
        account = named_account(options["name"])
        user = named_user(options["user"], flag="--user")
        try:
            plan = updates.plan_update(account=account, config=config)
            self.stdout.write(plan.text(), ending="")
            plan, run = updates.update_account(account=account, user=user, config=config)
        except RequestInvalid as exc:
            raise BadInput(
                "\n".join(message for messages in exc.errors.values() for message in messages)
            ) from exc
        except PortalError as exc:
            raise BadInput(exc.message) from exc
        if run is None:
            self.stderr.write(f"production account {account.name}: registration updated")
            return
        self.stderr.write(f"account {account.name}: update run #{run.pk} started")
        self.stdout.write(str(run.pk))
        if options["wait"]:
            status = follow_run(run_id=run.pk, poll=options["poll"], write=self.stderr.write)
            if status != RunStatus.SUCCEEDED:
                sys.exit(EXIT_FAILED)
