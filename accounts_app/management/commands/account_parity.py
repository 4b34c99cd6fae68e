"""Compare account NAME with its production now, store the report and print it.

Exit codes: 0 in parity; 1 a rule is broken; 2 bad input (unknown account, no
production reference).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import CommandParser

from accounts_app import parity, selectors
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand


class Command(PortalCommand):
    help = "Compute the parity report of account NAME against its production."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--json", action="store_true", help="print the report as one object")

    def handle(self, *args: Any, **options: Any) -> None:
        account = selectors.account_named(options["name"])
        if account is None:
            raise BadInput(f"unknown account {options['name']!r}")
        try:
            report = parity.compute_report(account=account).report
        except parity.ParityUnavailable as exc:
            raise BadInput(exc.message) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report, sort_keys=True))
        else:
            self.stdout.write("\n".join(parity.report_lines(report)))
        if not report["in_parity"]:
            sys.exit(EXIT_FAILED)
