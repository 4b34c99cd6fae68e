"""Comparing a clone with production: pure functions over configs, resources and versions.

Resources have one shape on both sides, ``{"address", "type", "values"}``, read from a
Terraform module tree (``values.root_module`` of ``terraform show -json`` of a state, or
``planned_values.root_module`` of a plan). A sensitive value is kept as a digest only
(``{"sensitive_sha256": ...}``): compared by digest, shown as ``(sensitive)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from pipelines.parity_rules import Parity, PurposeParity, ResourceRule

SENSITIVE_KEY = "sensitive_sha256"
SHOWN_SENSITIVE = "(sensitive)"
PRESENT, MISSING = "present", "missing"
# The instance key at the end of an address: ["orders"] or [0].
INSTANCE_KEY = re.compile(r'\[(?:"(?:[^"\\]|\\.)*"|[0-9]+)\]\Z')

Resource = dict[str, Any]


class CheckStatus(StrEnum):
    EQUAL = "equal"
    DIFFERS = "differs"
    ALLOWED = "allowed"


@dataclass(frozen=True)
class Check:
    path: str
    status: CheckStatus
    clone: Any
    production: Any
    rule: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": str(self.status)}

    def line(self) -> str:
        return (
            f"{self.status} {self.path}: clone={as_text(self.clone)} "
            f"production={as_text(self.production)}"
        )


def as_text(value: Any) -> str:
    """A value as report lines show it: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(value: Any) -> dict[str, str]:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return {SENSITIVE_KEY: hashlib.sha256(canonical.encode()).hexdigest()}


def is_digest(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {SENSITIVE_KEY}


def _masked(value: Any, mask: Any) -> Any:
    """``value`` with each part Terraform's ``sensitive_values`` mask marks made a digest."""
    if mask is True:
        return digest(value)
    if isinstance(mask, Mapping) and isinstance(value, Mapping):
        return {key: _masked(item, mask.get(key)) for key, item in value.items()}
    if isinstance(mask, list) and isinstance(value, list):
        return [_masked(item, mask[i] if i < len(mask) else None) for i, item in enumerate(value)]
    return value


def _modules(module: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield module
    for child in module.get("child_modules") or []:
        if isinstance(child, Mapping):
            yield from _modules(child)


def resources_from_module(root_module: Mapping[str, Any] | None) -> list[Resource]:
    """Every managed resource of a module tree (child modules included), sorted by address."""
    found: list[Resource] = []
    for module in _modules(root_module or {}):
        for item in module.get("resources") or []:
            if not isinstance(item, Mapping) or item.get("mode", "managed") != "managed":
                continue
            found.append(
                {
                    "address": str(item.get("address", "")),
                    "type": str(item.get("type", "")),
                    "values": _masked(item.get("values") or {}, item.get("sensitive_values")),
                }
            )
    return sorted(found, key=lambda resource: resource["address"])


class StateInvalid(ValueError):
    """Not the output of ``terraform show -json`` of a state."""


def resources_from_state(state: Any) -> list[Resource]:
    """The resources of ``terraform show -json`` output (an empty state has none)."""
    if not isinstance(state, Mapping) or "format_version" not in state:
        raise StateInvalid("not the output of terraform show -json (no format_version)")
    values = state.get("values") or {}
    if not isinstance(values, Mapping):
        raise StateInvalid("values must be a mapping")
    root = values.get("root_module") or {}
    if not isinstance(root, Mapping):
        raise StateInvalid("values.root_module must be a mapping")
    return resources_from_module(root)


def config_value(config: Mapping[str, Any], path: str) -> Any:
    value: Any = config
    for segment in path.split("."):
        if not isinstance(value, Mapping) or segment not in value:
            return None
        value = value[segment]
    return value


def attribute_value(values: Any, path: str) -> Any:
    value = values
    for segment in path.split("."):
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return None
    return value


def without_instance_key(address: str) -> str:
    return INSTANCE_KEY.sub("", address)


def _shown_value(value: Any) -> Any:
    """A value as a report shows it: digests (anywhere inside) as (sensitive)."""
    if is_digest(value):
        return SHOWN_SENSITIVE
    if isinstance(value, Mapping):
        return {key: _shown_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shown_value(item) for item in value]
    return value


def _status(*, same: bool) -> CheckStatus:
    return CheckStatus.EQUAL if same else CheckStatus.DIFFERS


def compare(
    *,
    parity: Parity,
    purpose: str,
    clone_config: Mapping[str, Any],
    production_config: Mapping[str, Any],
    clone_resources: Sequence[Resource],
    production_resources: Sequence[Resource],
    clone_version: str,
    production_version: str,
    data_age_hours: float | None,
) -> list[Check]:
    """Every check of the purpose's rules, then the allowed differences, in that order."""
    rules = parity.rules_for(purpose)
    checks = [
        Check(
            path=path,
            status=_status(
                same=config_value(clone_config, path) == config_value(production_config, path)
            ),
            clone=config_value(clone_config, path),
            production=config_value(production_config, path),
            rule="equal",
        )
        for path in rules.equal
    ]
    checks += _resource_checks(rules=rules, clone=clone_resources, production=production_resources)
    checks += _attribute_checks(rules=rules, clone=clone_resources, production=production_resources)
    if rules.same_blueprint_version:
        checks.append(
            Check(
                path="blueprint_version",
                status=_status(same=clone_version == production_version),
                clone=clone_version,
                production=production_version,
                rule="same_blueprint_version",
            )
        )
    if rules.max_data_age_hours is not None:
        limit = rules.max_data_age_hours
        fresh = data_age_hours is not None and data_age_hours <= limit
        checks.append(
            Check(
                path="data_age_hours",
                status=_status(same=fresh),
                clone=data_age_hours,
                production=0,  # production's data is live
                rule=f"max_data_age_hours {limit:g}",
            )
        )
    for path, reason in parity.allowed_differences.items():
        clone, production = config_value(clone_config, path), config_value(production_config, path)
        checks.append(
            Check(
                path=path,
                status=CheckStatus.EQUAL if clone == production else CheckStatus.ALLOWED,
                clone=clone,
                production=production,
                rule="allowed_difference",
                reason=reason,
            )
        )
    return checks


def _resource_checks(
    *, rules: PurposeParity, clone: Sequence[Resource], production: Sequence[Resource]
) -> list[Check]:
    if rules.resources is None:
        return []
    key = "address" if rules.resources == ResourceRule.ADDRESSES else "type"
    have = {resource[key] for resource in clone}
    checks = []
    for wanted in sorted({resource[key] for resource in production}):
        checks.append(
            Check(
                path=f"resource {wanted}",
                status=_status(same=wanted in have),
                clone=PRESENT if wanted in have else MISSING,
                production=PRESENT,
                rule=f"resources {rules.resources}",
            )
        )
    return checks


def _attribute_checks(
    *, rules: PurposeParity, clone: Sequence[Resource], production: Sequence[Resource]
) -> list[Check]:
    """Per production instance of each ruled address, each attribute against the clone's."""
    clone_by_address = {resource["address"]: resource for resource in clone}
    checks = []
    for ruled, paths in rules.resource_attributes.items():
        for resource in production:
            if without_instance_key(resource["address"]) != ruled:
                continue
            twin = clone_by_address.get(resource["address"])
            for path in paths:
                theirs = attribute_value(resource["values"], path)
                ours = attribute_value(twin["values"], path) if twin else None
                checks.append(
                    Check(
                        path=f"resource {resource['address']}.{path}",
                        status=_status(same=twin is not None and ours == theirs),
                        clone=_shown_value(ours) if twin else MISSING,
                        production=_shown_value(theirs),
                        rule="resource_attributes",
                    )
                )
    return checks


def resource_checks(
    *, rules: PurposeParity, clone: Sequence[Resource], production: Sequence[Resource]
) -> list[Check]:
    """The ``resources`` and ``resource_attributes`` checks only (what a plan can tell)."""
    return [
        *_resource_checks(rules=rules, clone=clone, production=production),
        *_attribute_checks(rules=rules, clone=clone, production=production),
    ]


def declared_addresses(configuration: Mapping[str, Any] | None) -> set[str]:
    """Resource addresses (no instance keys) a plan's ``configuration`` declares, all modules."""
    found: set[str] = set()

    def walk(module: Any, prefix: str) -> None:
        if not isinstance(module, Mapping):
            return
        for item in module.get("resources") or []:
            if isinstance(item, Mapping) and item.get("mode", "managed") == "managed":
                found.add(prefix + str(item.get("address", "")))
        for name, call in (module.get("module_calls") or {}).items():
            if isinstance(call, Mapping):
                walk(call.get("module"), f"{prefix}module.{name}.")

    walk((configuration or {}).get("root_module"), "")
    return found


def explain(checks: Sequence[Check]) -> str:
    """What differs, in one sentence: missing resources and attributes with both values."""
    parts = []
    for check in checks:
        if check.status != CheckStatus.DIFFERS:
            continue
        if check.clone == MISSING:
            parts.append(f"{check.path} is missing (production has it)")
        else:
            parts.append(
                f"{check.path} is {as_text(check.clone)}, production's is "
                f"{as_text(check.production)}"
            )
    return "; ".join(parts)


def in_parity(checks: Sequence[Check]) -> bool:
    return all(check.status != CheckStatus.DIFFERS for check in checks)
