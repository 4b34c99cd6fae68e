"""A blueprint's ``parity:`` rules: per purpose, what of a clone must equal production's.

    parity:
      production: prod                 # the reference account's name
      purposes:
        qa:
          equal: [dns_zone, services]  # config paths (dotted; a list or map is compared whole)
          resources: addresses         # or types: production's resources are in the clone's
          enforce: refuse              # refuse (default) or warn, at request time
        loadtest:
          resource_attributes:         # address without instance key -> attribute paths
            terraform_data.database: [input.instance_class]
        demo:
          same_blueprint_version: true
          max_data_age_hours: 168
          follow_production: true
      allowed_differences:             # config path -> why it may always differ
        cidr: each account has its own network range

Parsed once, at blueprint load, so a path or purpose the blueprint does not have is an
error then, naming the blueprint (the caller's ``fail``) and the path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from accounts_app.names import is_account_name


class Enforce(StrEnum):
    REFUSE = "refuse"
    WARN = "warn"


class ResourceRule(StrEnum):
    ADDRESSES = "addresses"  # every production address (with instance keys) is in the clone
    TYPES = "types"  # every production resource type is in the clone


# terraform_data.database, module.net.aws_vpc.main: an address without instance keys.
RESOURCE_ADDRESS = re.compile(
    r"(module\.[A-Za-z_][A-Za-z0-9_-]*\.)*(data\.)?[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z0-9_-]+"
)
ATTRIBUTE_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
PURPOSE_KEYS = frozenset(
    {
        "equal",
        "resources",
        "resource_attributes",
        "enforce",
        "same_blueprint_version",
        "max_data_age_hours",
        "follow_production",
    }
)


@dataclass(frozen=True)
class PurposeParity:
    equal: tuple[str, ...] = ()
    resources: ResourceRule | None = None
    resource_attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    enforce: Enforce = Enforce.REFUSE
    same_blueprint_version: bool = False
    max_data_age_hours: float | None = None
    follow_production: bool = False


@dataclass(frozen=True)
class Parity:
    production: str
    purposes: Mapping[str, PurposeParity] = field(default_factory=dict)
    allowed_differences: Mapping[str, str] = field(default_factory=dict)

    def rules_for(self, purpose: str) -> PurposeParity:
        return self.purposes.get(purpose, PurposeParity())


Fail = Callable[[str], Exception]


def config_path_known(*, parameters: Mapping[str, Any], path: str) -> bool:
    """True when each dotted segment of ``path`` is a property of the schema at that depth."""
    schema: Any = parameters
    for segment in path.split("."):
        properties = schema.get("properties") if isinstance(schema, Mapping) else None
        if not isinstance(properties, Mapping) or segment not in properties:
            return False
        schema = properties[segment]
    return True


def parse_parity(
    raw: Any, *, parameters: Mapping[str, Any], purposes: Collection[str], fail: Fail
) -> Parity | None:
    """The rules of ``raw`` (the ``parity:`` mapping), or None when there is none."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise fail("parity must be a mapping")
    unknown = set(raw) - {"production", "purposes", "allowed_differences"}
    if unknown:
        raise fail(f"parity: unknown setting(s) {', '.join(sorted(map(str, unknown)))}")
    production = raw.get("production")
    if not isinstance(production, str) or not is_account_name(production):
        raise fail("parity.production must name the production account")

    def config_path(path: Any, where: str) -> str:
        if not isinstance(path, str) or not config_path_known(parameters=parameters, path=path):
            raise fail(f"{where}: config path {path!r} is not a parameter of the blueprint")
        return path

    rules: dict[str, PurposeParity] = {}
    given = raw.get("purposes") or {}
    if not isinstance(given, Mapping):
        raise fail("parity.purposes must be a mapping of purpose to rules")
    for purpose, values in given.items():
        where = f"parity.purposes.{purpose}"
        if purpose not in purposes:
            raise fail(f"{where}: the blueprint has no purpose {purpose!r}")
        rules[str(purpose)] = _parse_purpose(
            values, where=where, config_path=config_path, fail=fail
        )

    allowed = raw.get("allowed_differences") or {}
    if not isinstance(allowed, Mapping):
        raise fail("parity.allowed_differences must be a mapping of config path to reason")
    differences: dict[str, str] = {}
    for path, reason in allowed.items():
        where = "parity.allowed_differences"
        config_path(path, where)
        if not isinstance(reason, str) or not reason.strip():
            raise fail(f"{where}.{path}: give the reason it may differ")
        differences[str(path)] = reason.strip()
    for purpose, rule in rules.items():
        for path in rule.equal:
            if path in differences:
                raise fail(
                    f"parity.purposes.{purpose}.equal: {path!r} is also an allowed difference"
                )
    return Parity(production=production, purposes=rules, allowed_differences=differences)


def _parse_purpose(
    values: Any, *, where: str, config_path: Callable[[Any, str], str], fail: Fail
) -> PurposeParity:
    if not isinstance(values, Mapping):
        raise fail(f"{where} must be a mapping")
    unknown = set(values) - PURPOSE_KEYS
    if unknown:
        raise fail(f"{where}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}")
    equal = values.get("equal") or []
    if not isinstance(equal, list):
        raise fail(f"{where}.equal must be a list of config paths")
    paths = tuple(config_path(path, f"{where}.equal") for path in equal)

    resources = values.get("resources")
    if resources is not None and resources not in ResourceRule.__members__.values():
        raise fail(f"{where}.resources must be addresses or types")

    attributes = values.get("resource_attributes") or {}
    if not isinstance(attributes, Mapping):
        raise fail(f"{where}.resource_attributes must map resource addresses to attribute paths")
    parsed_attributes: dict[str, tuple[str, ...]] = {}
    for address, attribute_paths in attributes.items():
        if not isinstance(address, str) or not RESOURCE_ADDRESS.fullmatch(address):
            raise fail(
                f"{where}.resource_attributes: {address!r} is not a resource address "
                "without instance key (such as terraform_data.database)"
            )
        if (
            not isinstance(attribute_paths, list)
            or not attribute_paths
            or not all(isinstance(p, str) and ATTRIBUTE_PATH.fullmatch(p) for p in attribute_paths)
        ):
            raise fail(
                f"{where}.resource_attributes.{address} must be a list of attribute paths "
                "such as input.instance_class"
            )
        parsed_attributes[address] = tuple(attribute_paths)

    enforce = values.get("enforce", Enforce.REFUSE)
    if enforce not in Enforce.__members__.values():
        raise fail(f"{where}.enforce must be refuse or warn")
    max_age = values.get("max_data_age_hours")
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0
    ):
        raise fail(f"{where}.max_data_age_hours must be a positive number")
    flags: dict[str, bool] = {}
    for key in ("same_blueprint_version", "follow_production"):
        flag = values.get(key, False)
        if not isinstance(flag, bool):
            raise fail(f"{where}.{key} must be true or false")
        flags[key] = flag
    return PurposeParity(
        equal=paths,
        resources=ResourceRule(resources) if resources is not None else None,
        resource_attributes=parsed_attributes,
        enforce=Enforce(enforce),
        same_blueprint_version=flags["same_blueprint_version"],
        max_data_age_hours=float(max_age) if max_age is not None else None,
        follow_production=flags["follow_production"],
    )
