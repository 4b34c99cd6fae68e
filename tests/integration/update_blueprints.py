"""Blueprints made for a test in the session's blueprints folder: small Terraform
(``terraform_data`` only) with a version, policies and parity rules a test chooses."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = """resource "terraform_data" "app" {
  input = {
    label = {{ config.label }}
    size  = {{ config.size }}
  }
}
"""

# The same, plus the blueprint's version in the input: an upgrade changes the plan.
VERSIONED_TEMPLATE = """resource "terraform_data" "app" {
  input = {
    label   = {{ config.label }}
    size    = {{ config.size }}
    version = {{ blueprint.version }}
  }
}
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_blueprint(
    root: Path,
    *,
    name: str,
    version: str = "1.0.0",
    stages: tuple[str, ...] = ("render", "plan", "approve_plan", "apply"),
    policy: dict[str, Any] | None = None,
    parity: dict[str, Any] | None = None,
    template: str = TEMPLATE,
) -> Path:
    """Write (or rewrite) blueprint ``name``: parameters ``label`` and ``size``."""
    folder = root / name
    (folder / "terraform").mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "name": name,
        "title": f"Test {name}",
        "version": version,
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "label": {"type": "string", "default": "one", "maxLength": 40},
                "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
            },
        },
        "stages": list(stages),
        "approval": {"plan": "on_destroy", "timeout_hours": 1},
        "policy": policy
        or {"demo": {"auto_approve": ["admins"]}, "qa": {"auto_approve": ["admins", "approvers"]}},
    }
    if parity is not None:
        spec["parity"] = parity
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (folder / "terraform" / "main.tf.j2").write_text(template)
    return folder
