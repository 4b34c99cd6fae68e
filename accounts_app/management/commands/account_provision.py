"""Create (or reuse) an account and start its provision run; optionally follow it.

Exit codes: 0 run started (or, with --wait, succeeded); 1 the run failed or was
cancelled; 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from accounts_app.management.commands._arguments import named_user
from accounts_app.models import CLONE_PURPOSES, Purpose
from accounts_app.services import ParityRefused, provision_account
from pipelines.blueprints import BlueprintError, ConfigInvalid
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, follow_run, read_config_file
from pipelines.models import RunStatus
from portal.errors import PortalError


class Command(PortalCommand):
    help = "Create or reuse account NAME from a blueprint and config, and start a provision run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--blueprint", required=True)
        parser.add_argument("--config", required=True, help="YAML file of parameter values")
        parser.add_argument("--purpose", choices=CLONE_PURPOSES, default=Purpose.QA)
        parser.add_argument(
            "--owner", default="", help="username of the owner (default: the portal's system user)"
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        config = read_config_file(options["config"])
        owner = named_user(options["owner"], flag="--owner")
        try:
            done = provision_account(
                name=options["name"],
                blueprint=options["blueprint"],
                config=config,
                purpose=options["purpose"],
                owner=owner,
            )
        except ConfigInvalid as exc:
            raise BadInput("\n".join(str(problem) for problem in exc.problems)) from exc
        except ParityRefused as exc:
            raise BadInput("\n".join(exc.problems)) from exc
        except ValidationError as exc:
            raise BadInput(
                "\n".join(
                    f"--{field}: {'; '.join(msgs)}" for field, msgs in exc.message_dict.items()
                )
            ) from exc
        except (BlueprintError, PortalError) as exc:
            raise BadInput(str(exc)) from exc
        for warning in done.parity_warnings:
            self.stderr.write(f"warning: differs from production: {warning}")
        verb = "created" if done.created else "reused"
        self.stderr.write(f"account {done.account.name} {verb}; provision run started")
        self.stdout.write(str(done.run.pk))
        run = done.run
        if options["wait"]:
            status = follow_run(run_id=run.pk, poll=options["poll"], write=self.stderr.write)
            if status != RunStatus.SUCCEEDED:
                sys.exit(EXIT_FAILED)
