"""Check an account for drift now, or reconcile it (an update run under the approval policy).

Exit codes, with --wait: 0 no drift (or the reconcile succeeded), 3 drift found, 1 the
run failed or was cancelled; 2 bad input. Without --wait: 0 once the run started.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import CommandParser

from accounts_app import drift
from accounts_app.management.commands._arguments import named_account
from accounts_app.production import system_user
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, follow_run
from pipelines.models import PipelineRun, RunStatus
from portal.errors import PortalError

EXIT_DRIFTED = 3


class Command(PortalCommand):
    help = "Check account NAME for drift (plan of the live state, no apply), or --reconcile it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--reconcile", action="store_true", help="start an update run of its config"
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        account = named_account(options["name"])
        try:
            if options["reconcile"]:
                run = drift.reconcile(account=account, user=system_user())
            else:
                run = drift.start_check(account=account, user=system_user())
        except PortalError as exc:
            raise BadInput(exc.message) from exc
        self.stderr.write(f"{run.get_kind_display().lower()} run of {account.name} started")
        self.stdout.write(str(run.pk))
        if not options["wait"]:
            return
        status = follow_run(run_id=run.pk, write=self.stderr.write, poll=options["poll"])
        if status != RunStatus.SUCCEEDED:
            sys.exit(EXIT_FAILED)
        if not options["reconcile"]:
            self._report(PipelineRun.objects.get(pk=run.pk))

    def _report(self, run: PipelineRun) -> None:
        report = drift.latest_report(run.account)
        if report is None or report.run_id != run.pk or not report.drifted:
            self.stdout.write(f"{run.account.name}: no drift")
            return
        summary = drift.drift_summary(report)
        self.stdout.write(
            f"{run.account.name}: drifted: {summary.add} to add, {summary.change} to change, "
            f"{summary.replace} to replace, {summary.destroy} to destroy"
        )
        for resource in summary.resources:
            if resource.action != "no-op":
                self.stdout.write(f"  {resource.action:<8} {resource.address}")
        sys.exit(EXIT_DRIFTED)
