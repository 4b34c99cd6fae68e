"""Shared pieces of the management commands: reading config files, reporting problems."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


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
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"--config: no such file: {path}")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"--config: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput(f"--config: {path} must hold a mapping of parameter names to values")
    return data
