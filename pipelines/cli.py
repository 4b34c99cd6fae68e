"""Shared pieces of the management commands: reading config files, reporting problems."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand

from accounts_app.names import ACCOUNT_NAME_RULE, is_account_name
from pipelines import selectors
from pipelines.blueprints import (
    ACCOUNT_NAME_KEY,
    Blueprint,
    BlueprintError,
    ConfigInvalid,
    load_blueprint,
)
from pipelines.models import StageStatus
from pipelines.stages.render import template_context
from pipelines.yaml_input import YamlInputError, load_config_file

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# The account name templates see when a command renders with no account (and no --account-name).
PREVIEW_ACCOUNT_NAME = "preview"


class BadInput(Exception):
    """Exit 2: the user's input is wrong; the message says what, one problem a line."""


class PortalCommand(BaseCommand):
    """A command whose input errors print plainly (no class name) and exit 2."""

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except BadInput as exc:
            self.stderr.write(str(exc))
            sys.exit(EXIT_BAD_INPUT)


def read_config_file(path: str) -> dict[str, Any]:
    """``--config FILE``: its mapping, read with the YAML limits, or BadInput naming --config."""
    try:
        return load_config_file(path)
    except YamlInputError as exc:
        raise BadInput(f"--config: {exc.message}") from exc


def render_input(
    name: str, config_path: str, account_name: str, purpose: str
) -> tuple[Blueprint, dict[str, Any]]:
    """The blueprint and template context for a config file, or BadInput listing the problems."""
    try:
        blueprint = load_blueprint(name)
    except BlueprintError as exc:
        raise BadInput(str(exc)) from exc
    if account_name and not is_account_name(account_name):
        raise BadInput(f"--account-name: {ACCOUNT_NAME_RULE}")
    raw = read_config_file(config_path)
    # The account's name is --account-name; a config written before it was dropped may
    # still carry it (then it must be the same).
    name = account_name or str(raw.get(ACCOUNT_NAME_KEY) or PREVIEW_ACCOUNT_NAME)
    if not is_account_name(name):
        raise BadInput(f"$.{ACCOUNT_NAME_KEY}: {ACCOUNT_NAME_RULE}")
    try:
        config = blueprint.validate_config(blueprint.config_for_account(raw, name=name))
    except ConfigInvalid as exc:
        raise BadInput("\n".join(str(problem) for problem in exc.problems)) from exc
    context = template_context(blueprint, config, account_name=name, purpose=purpose)
    return blueprint, context


def follow_run(*, run_id: int, poll: float, write: Callable[[str], None]) -> str:
    """``--wait``: write each stage's status change until the run ends; its final status."""
    seen: dict[int, tuple[str, int]] = {}
    while True:
        run = selectors.run_with_stages(run_id)
        for stage in run.stages.all():
            state = (stage.status, stage.attempt)
            if seen.get(stage.pk) != state and stage.status != StageStatus.PENDING:
                seen[stage.pk] = state
                note = f": {stage.explanation}" if stage.explanation else ""
                write(f"  {stage.kind:<13} {stage.status}{note}")
        # A run waiting for approval is still active: an approver decides in the portal.
        if not run.is_active:
            write(f"run #{run.pk} {run.status}{': ' + run.explanation if run.explanation else ''}")
            return run.status
        time.sleep(poll)


def machine_load() -> str:
    """The machine's load averages, for a benchmark's lines: its figures mean little
    without them (the machine may be shared)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {fifteen:.2f} (15 min)"
