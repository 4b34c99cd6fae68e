"""Upgrade accounts to their blueprint's newer version, as the account page's and the
blueprint page's upgrades do: account NAME (its diff printed, then its update run), or
with --all-of BLUEPRINT every clone of the blueprint that is behind it. Each update runs
under its own purpose's approval policy, asked by --user.

Prints each run started as ``NAME RUN_ID`` on its own line. Exit codes: 0 the runs
started (with --wait: all succeeded); 1 a run failed or was cancelled, or an account of
--all-of could not start (it says why; the others go on); 2 bad input (an unknown account,
blueprint or user, an account at its blueprint's version already).
"""

from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import CommandParser

from accounts_app import updates
from accounts_app.management.commands._arguments import (
    add_update_arguments,
    named_account,
    named_user,
)
from pipelines.blueprints import BlueprintError, load_blueprint
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, follow_run
from pipelines.models import PipelineRun, RunStatus
from portal.errors import PortalError


class Command(PortalCommand):
    help = "Upgrade account NAME, or --all-of BLUEPRINT, to the blueprint's newer version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", default="", help="the account to upgrade")
        parser.add_argument(
            "--all-of",
            default="",
            metavar="BLUEPRINT",
            help="upgrade every clone of BLUEPRINT that is behind its version",
        )
        add_update_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["name"]) == bool(options["all_of"]):
            raise BadInput("name one account, or a blueprint with --all-of: one of the two")
        user = named_user(options["user"], flag="--user")
        if options["name"]:
            runs = [self._upgrade_one(name=options["name"], user=user)]
            could_not_start = False
        else:
            runs, could_not_start = self._upgrade_all(blueprint=options["all_of"], user=user)
        for run in runs:
            self.stdout.write(f"{run.account.name} {run.pk}")
        finished = [
            follow_run(run_id=run.pk, poll=options["poll"], write=self.stderr.write)
            for run in (runs if options["wait"] else [])
        ]
        if could_not_start or any(status != RunStatus.SUCCEEDED for status in finished):
            sys.exit(EXIT_FAILED)

    def _upgrade_one(self, *, name: str, user: User) -> PipelineRun:
        account = named_account(name)
        try:
            plan, run = updates.upgrade_account(account=account, user=user)
        except PortalError as exc:
            raise BadInput(exc.message) from exc
        self.stderr.write(plan.text(), ending="")
        self.stderr.write(
            f"account {account.name}: upgrade {plan.from_version} -> {plan.to_version}, "
            f"run #{run.pk} started"
        )
        return run

    def _upgrade_all(self, *, blueprint: str, user: User) -> tuple[list[PipelineRun], bool]:
        try:
            loaded = load_blueprint(blueprint)
        except BlueprintError as exc:
            raise BadInput(f"--all-of: {exc}") from exc
        results = updates.upgrade_all(blueprint_name=loaded.name, user=user)
        if not results:
            self.stderr.write(f"no account of {loaded.name} is behind version {loaded.version}")
        for result in results:
            if result.run is None:
                self.stderr.write(f"account {result.account.name}: not started: {result.problem}")
            else:
                self.stderr.write(
                    f"account {result.account.name}: upgrade to {loaded.version}, "
                    f"run #{result.run.pk} started"
                )
        runs = [result.run for result in results if result.run is not None]
        return runs, any(result.run is None for result in results)
