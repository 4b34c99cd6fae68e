"""The stage kinds the portal knows, each a module with ``execute(ctx) -> dict``.

Modules are imported only when a stage of their kind runs, so loading a
blueprint does not pull in boto3, psycopg or Terraform.
"""

from __future__ import annotations

import importlib

from pipelines.stages.base import Executor

STAGE_KINDS: dict[str, str] = {
    "pre_hooks": "pipelines.stages.hooks",
    "render": "pipelines.stages.render",
    "plan": "pipelines.stages.plan",
    "approve_plan": "pipelines.stages.approve_plan",
    "apply": "pipelines.stages.apply",
    "post_hooks": "pipelines.stages.hooks",
    "db_clone": "pipelines.stages.db_clone",
    "dns_cutover": "pipelines.stages.dns_cutover",
    "db_teardown": "pipelines.stages.db_teardown",
    "drift_plan": "pipelines.stages.drift",
    # Teardown runs only (pipelines.services.stages_for), never a blueprint's stages.
    "teardown_checks": "pipelines.stages.teardown_checks",
    "sweep": "pipelines.stages.sweep",
    "close_account": "pipelines.stages.close_account",
}

TEARDOWN_ONLY_STAGES: frozenset[str] = frozenset({"teardown_checks", "sweep", "close_account"})

# Built-in hooks a blueprint may name under hooks.pre / hooks.post.
BUILTIN_HOOKS: frozenset[str] = frozenset(
    {"aws.create_account", "aws.assume_role", "aws.private_zone"}
)


def executor_for(kind: str) -> Executor:
    module = importlib.import_module(STAGE_KINDS[kind])
    executor: Executor = module.execute
    return executor
