"""Plan a blueprint with a config file on this machine: no database, no worker.

Renders into a temporary folder, runs ``init`` and ``plan`` with local state in that
folder (so it always plans from nothing: what a new account would get), and prints
the summary. Exit 0 on success, 2 for bad input, 1 when Terraform fails (with
Terraform's own error text on stderr). This is how an engineer sees a plan before
pushing a blueprint change.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser

from pipelines.cli import EXIT_FAILED, BadInput, PortalCommand, render_input
from pipelines.clients.terraform import (
    BackendConflict,
    LocalBackend,
    PlanSummary,
    TerraformClient,
    TerraformError,
)
from pipelines.rendering import RenderError, render_blueprint
from pipelines.stages.terraform_support import terraform_cli_config

SYMBOLS = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "read": "<="}


class Command(PortalCommand):
    help = (
        "Render blueprint NAME with --config FILE.yaml into a temporary folder and show what "
        "Terraform would do for a new account (init + plan, local state). "
        "With -v 2, Terraform's own output is shown on stderr as it runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--config", required=True, help="YAML file of parameter values")
        parser.add_argument("--account-name", default="", help="account name seen by templates")
        parser.add_argument("--purpose", default="qa")

    def handle(self, *args: Any, **options: Any) -> None:
        blueprint, context = render_input(
            options["name"], options["config"], options["account_name"], options["purpose"]
        )
        verbose = int(options.get("verbosity", 1)) >= 2
        with tempfile.TemporaryDirectory(prefix="blueprint-plan-") as temp:
            directory = Path(temp) / "terraform"
            try:
                render_blueprint(blueprint.terraform_dir, context, directory)
            except RenderError as exc:
                raise BadInput(f"render failed: {exc}") from exc
            lines: list[str] = []

            def on_line(line: str) -> None:
                lines.append(line)
                if verbose:
                    self.stderr.write(line)

            try:
                client = TerraformClient(
                    workdir=directory,
                    terraform_bin=settings.TERRAFORM_BIN or None,
                    cli_config_file=terraform_cli_config(),
                    backend=LocalBackend(Path(temp) / "state" / "terraform.tfstate"),
                    on_line=on_line,
                )
                client.init()
                summary = client.plan(Path(temp) / "plan.bin")
            except BackendConflict as exc:
                raise BadInput(f"blueprint {blueprint.name}: {exc.explanation}") from exc
            except TerraformError as exc:
                self._report_failure(exc, lines)
                sys.exit(EXIT_FAILED)
        self._print_summary(blueprint.name, blueprint.version, summary)

    def _report_failure(self, exc: TerraformError, lines: list[str]) -> None:
        """Terraform's own error text: everything from its first "Error:" line on."""
        first_error = next((i for i, line in enumerate(lines) if "Error:" in line), None)
        shown = lines[first_error:] if first_error is not None else exc.tail
        self.stderr.write(f"terraform failed: {exc.explanation}")
        for line in shown:
            self.stderr.write(line)

    def _print_summary(self, name: str, version: str, summary: PlanSummary) -> None:
        changed = [r for r in summary.resources if r.action != "no-op"]
        self.stdout.write(f"Plan for blueprint {name} {version} (a new account, empty state):")
        self.stdout.write(
            f"  {summary.add} to add, {summary.change} to change, "
            f"{summary.replace} to replace, {summary.destroy} to destroy"
        )
        for resource in changed:
            symbol = SYMBOLS.get(resource.action, "?")
            self.stdout.write(f"  {symbol:<3} {resource.action:<8} {resource.address}")
        if summary.output_changes:
            self.stdout.write(f"  outputs: {', '.join(summary.output_changes)}")
        if not summary.has_changes:
            self.stdout.write("  no changes")
