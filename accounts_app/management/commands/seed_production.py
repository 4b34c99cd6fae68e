"""Build the local production of the `sandbox` blueprint and its production-like data.

Provisioned by the portal itself, in this process (no worker needed; one that is
running may take stages and is waited for), so its Terraform state is in the portal's
backend. Idempotent: a second run changes nothing and says so; a run after a killed
one finishes it.

Exit codes: 0 built (or already built); 1 the build failed; 2 bad input.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from accounts_app.local_production import LocalProductionError, seed_production
from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand
from pipelines.dbclone.production_data import MAX_ROWS, MIN_ROWS


class Command(PortalCommand):
    help = (
        "Build the local production account of the sandbox blueprint and fill its orders "
        "database with generated production-like data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rows",
            type=int,
            default=None,
            help="rows of generated data in all (default: PORTAL_DEMO_PRODUCTION_ROWS)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rows = options["rows"]
        if rows is None:
            rows = settings.PORTAL_DEMO_PRODUCTION_ROWS
        if not MIN_ROWS <= rows <= MAX_ROWS:
            raise BadInput(f"--rows: between {MIN_ROWS} and {MAX_ROWS}, not {rows}")
        try:
            built = seed_production(rows=rows, log=self.stderr.write)
        except LocalProductionError as exc:
            self.stderr.write(f"seed_production: {exc}")
            sys.exit(EXIT_FAILED)
        data = built.data
        tables = ", ".join(f"{table} {count}" for table, count in data.table_rows.items())
        if built.changed:
            self.stdout.write(
                f"local production {built.account.name} ready: database {data.database} "
                f"with {data.rows} rows ({tables})"
            )
        else:
            self.stdout.write(
                f"local production {built.account.name} and database {data.database} "
                f"({data.rows} rows) are already there: nothing changed"
            )
