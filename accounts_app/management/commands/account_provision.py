"""Create (or reuse) an account and start its provision run; optionally follow it.

Exit codes: 0 run started (or, with --wait, succeeded); 1 the run failed or was
cancelled; 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from accounts_app.models import CLONE_PURPOSES, Purpose
from accounts_app.production import system_user
from accounts_app.services import ParityRefused, provision_account
from pipelines import selectors
from pipelines.blueprints import BlueprintError, ConfigInvalid
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, read_config_file
from pipelines.models import RunStatus, StageStatus
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
        owner = (
            get_user_model().objects.filter(username=options["owner"]).first()
            if options["owner"]
            else system_user()
        )
        if owner is None:
            raise BadInput(f"--owner: no user named {options['owner']!r}")
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
            status = self._follow(run_id=run.pk, poll=options["poll"])
            if status != RunStatus.SUCCEEDED:
                sys.exit(EXIT_FAILED)

    def _follow(self, *, run_id: int, poll: float) -> str:
        """Print each stage's status change until the run ends; returns the run status."""
        seen: dict[int, tuple[str, int]] = {}
        while True:
            run = selectors.run_with_stages(run_id)
            for stage in run.stages.all():
                state = (stage.status, stage.attempt)
                if seen.get(stage.pk) != state and stage.status != StageStatus.PENDING:
                    seen[stage.pk] = state
                    note = f": {stage.explanation}" if stage.explanation else ""
                    self.stderr.write(f"  {stage.kind:<13} {stage.status}{note}")
            # A run waiting for approval is still active: an approver decides in the portal.
            if not run.is_active:
                self.stderr.write(
                    f"run #{run.pk} {run.status}{': ' + run.explanation if run.explanation else ''}"
                )
                return run.status
            time.sleep(poll)
