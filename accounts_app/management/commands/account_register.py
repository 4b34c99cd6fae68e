"""Register production as it is (or update its registration); no run is started.

Exit codes: 0 registered; 2 bad input, every problem on its own line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandParser

from accounts_app.production import RegistrationInvalid, register_production
from pipelines.cli import BadInput, PortalCommand
from pipelines.yaml_input import YamlInputError, load_config_file

MAX_STATE_BYTES = 64 * 1024 * 1024
# Where each field of a registration comes from on the command line.
OPTIONS = {
    "name": "--name",
    "blueprint": "--blueprint",
    "state": "--state-file",
    "cloud_account_id": "--cloud-account-id",
}


class Command(PortalCommand):
    help = "Register production account NAME of a blueprint, with its config and Terraform state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--blueprint", required=True)
        parser.add_argument("--config", required=True, help="YAML file of parameter values")
        parser.add_argument(
            "--state-file", default="", help="output of `terraform show -json` for production"
        )
        parser.add_argument("--cloud-account-id", default="")
        parser.add_argument(
            "--owner", default="", help="username of the owner (default: the portal's system user)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problems: list[str] = []
        config: dict[str, Any] = {}
        try:
            config = load_config_file(options["config"])
        except YamlInputError as exc:
            problems.append(f"--config: {exc.message}")
        state = None
        if options["state_file"]:
            state, problem = _read_state(Path(options["state_file"]))
            if problem:
                problems.append(f"--state-file: {problem}")
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                problems.append(f"--owner: no user named {options['owner']!r}")
        if problems:
            raise BadInput("\n".join(problems))
        try:
            account, created = register_production(
                name=options["name"],
                blueprint=options["blueprint"],
                config=config,
                state=state,
                cloud_account_id=options["cloud_account_id"],
                owner=owner,
            )
        except RegistrationInvalid as exc:
            # Config problems read "<json path>: <message>", as blueprint_render prints them.
            raise BadInput(
                "\n".join(
                    message if field == "config" else f"{OPTIONS[field]}: {message}"
                    for field, message in exc.problems
                )
            ) from exc
        verb = "registered" if created else "registration updated"
        self.stderr.write(
            f"production account {account.name} {verb}: {len(account.resources)} resources"
        )
        self.stdout.write(str(account.pk))


def _read_state(path: Path) -> tuple[Any, str]:
    """(parsed JSON, '') or (None, what is wrong)."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            return None, f"larger than {MAX_STATE_BYTES // (1024 * 1024)} MiB"
        return json.loads(path.read_bytes()), ""
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}"
    except ValueError as exc:
        return None, f"not JSON: {exc}"
