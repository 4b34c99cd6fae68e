"""Render a blueprint with a config file into a folder, printing each file's sha256."""

from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from pipelines.cli import BadInput, PortalCommand, render_input
from pipelines.rendering import RenderError, render_blueprint


class Command(PortalCommand):
    help = "Render blueprint NAME with --config FILE.yaml into --out DIR."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--config", required=True, help="YAML file of parameter values")
        parser.add_argument("--out", required=True, help="folder to write the Terraform files to")
        parser.add_argument("--account-name", default="", help="account name seen by templates")
        parser.add_argument("--purpose", default="qa")

    def handle(self, *args: Any, **options: Any) -> None:
        blueprint, context = render_input(
            options["name"], options["config"], options["account_name"], options["purpose"]
        )
        try:
            result = render_blueprint(blueprint.terraform_dir, context, Path(options["out"]))
        except RenderError as exc:
            raise BadInput(f"render failed: {exc}") from exc
        for path, digest in result.manifest:
            self.stdout.write(f"{digest}  {path}")
