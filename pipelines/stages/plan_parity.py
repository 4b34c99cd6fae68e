"""The plan stage's parity check: the clone's planned resources against production's.

For a purpose with ``resources`` or ``resource_attributes`` rules, a QA clone without
production's private zone, or a load test on a smaller database class, is caught before
apply. Under ``enforce: refuse`` a broken rule fails the plan; under ``warn`` it is only
reported in the plan's outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines import parity
from pipelines.parity_rules import Enforce
from pipelines.stages.base import StageContext, StageError


def check_plan(*, ctx: StageContext, plan: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parity part of the plan's outputs, or None when the purpose has no resource rules.

    Raises StageError when a rule names a resource the Terraform does not declare, or a
    rule under ``refuse`` is broken (naming the address, or the attribute and both values).
    """
    rules_of = ctx.blueprint.parity
    if rules_of is None or ctx.account.purpose not in rules_of.purposes:
        return None
    rules = rules_of.rules_for(ctx.account.purpose)
    if rules.resources is None and not rules.resource_attributes:
        return None
    declared = parity.declared_addresses(plan.get("configuration"))
    unknown = sorted(set(rules.resource_attributes) - declared)
    if unknown:
        raise StageError(
            f"blueprint {ctx.blueprint.name}: parity.purposes.{ctx.account.purpose}."
            f"resource_attributes names {', '.join(unknown)}, which its Terraform does not "
            "declare",
            retryable=False,
        )
    production = ctx.records.reference_resources(rules_of.production)
    if production is None:
        ctx.log(f"parity: production account {rules_of.production} is not registered; skipped")
        return {"production": rules_of.production, "checked": False, "checks": []}
    planned = parity.resources_from_module((plan.get("planned_values") or {}).get("root_module"))
    checks = parity.resource_checks(rules=rules, clone=planned, production=production)
    ok = parity.in_parity(checks)
    for check in checks:
        ctx.log(f"parity: {check.line()}")
    outputs = {
        "production": rules_of.production,
        "checked": True,
        "in_parity": ok,
        "enforce": str(rules.enforce),
        "checks": [check.as_dict() for check in checks],
    }
    if not ok and rules.enforce == Enforce.REFUSE:
        raise StageError(
            f"not in parity with production {rules_of.production}: {parity.explain(checks)}",
            retryable=False,
        )
    return outputs
