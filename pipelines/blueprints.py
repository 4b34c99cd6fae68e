"""Loading and checking blueprints: one folder per account archetype.

A blueprint is data, not code. Everything read from it is checked here, once,
so the rest of the portal can trust it: names, stage kinds, hook paths (nothing
outside the blueprint folder is read or run), approval and policy settings, and
the parameters' JSON Schema.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from pipelines.stages import BUILTIN_HOOKS, STAGE_KINDS

BLUEPRINT_NAME = re.compile(r"^[a-z0-9-]+$")
APPROVAL_MODES = ("always", "on_destroy", "never")
PURPOSES = ("demo", "qa", "loadtest", "standby")
DB_DRIVERS = ("aws_rds_snapshot", "postgres_logical")
DEFAULT_HOOK_TIMEOUT_MINUTES = 15
DEFAULT_APPROVAL_TIMEOUT_HOURS = 72


class BlueprintError(Exception):
    """A blueprint that cannot be used; the message names the blueprint and the problem."""


class UnknownBlueprint(BlueprintError):
    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(f"unknown blueprint {name!r}: no such blueprint in {directory}")
        self.name = name
        self.directory = directory


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # JSON path, e.g. "$.services[0].name"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigInvalid(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Policy:
    auto_approve: tuple[str, ...] = ()
    default_ttl_days: int | None = None
    max_ttl_days: int | None = None
    max_active_per_user: int | None = None


@dataclass(frozen=True)
class Hooks:
    pre: tuple[str, ...] = ()  # built-in hook names, run before the folder's scripts
    post: tuple[str, ...] = ()
    pre_scripts: tuple[Path, ...] = ()  # absolute paths inside the blueprint folder
    post_scripts: tuple[Path, ...] = ()
    timeout_minutes: float = DEFAULT_HOOK_TIMEOUT_MINUTES


@dataclass(frozen=True)
class Blueprint:
    name: str
    title: str
    description: str
    version: str
    parameters: dict[str, Any]
    stages: tuple[str, ...]
    path: Path
    approval_plan: str = "on_destroy"
    approval_timeout_hours: float = DEFAULT_APPROVAL_TIMEOUT_HOURS
    hooks: Hooks = field(default_factory=Hooks)
    policy: dict[str, Policy] = field(default_factory=dict)
    databases: tuple[dict[str, Any], ...] = ()

    @property
    def terraform_dir(self) -> Path:
        return self.path / "terraform"

    def policy_for(self, purpose: str) -> Policy:
        return self.policy.get(purpose, Policy())

    def validate_config(self, config: Any) -> dict[str, Any]:
        """The config with defaults applied, or ConfigInvalid listing every problem."""
        if not isinstance(config, dict):
            raise ConfigInvalid([ConfigProblem("$", "the config must be a mapping")])
        filled = apply_defaults(self.parameters, copy.deepcopy(config))
        validator = Draft202012Validator(self.parameters)
        problems = [
            ConfigProblem(error.json_path, error.message)
            for error in sorted(
                validator.iter_errors(filled), key=lambda e: (e.json_path, e.message)
            )
        ]
        if problems:
            raise ConfigInvalid(problems)
        return filled

    def resolve_file(self, relative: str) -> Path:
        """A file of this blueprint, refusing any path that leaves the blueprint folder."""
        return resolve_inside(self.path, relative, self.name)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill JSON-Schema `default`s into objects and array items, recursively."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def resolve_inside(root: Path, relative: str, blueprint_name: str) -> Path:
    if not relative or os.path.isabs(relative) or ".." in Path(relative).parts:
        raise BlueprintError(f"blueprint {blueprint_name}: path {relative!r} leaves the blueprint")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BlueprintError(f"blueprint {blueprint_name}: path {relative!r} leaves the blueprint")
    return resolved


def blueprints_dir() -> Path:
    return Path(settings.PORTAL_BLUEPRINTS_DIR).resolve()


def list_blueprints() -> list[Blueprint]:
    root = blueprints_dir()
    if not root.is_dir():
        return []
    return [
        load_blueprint(entry.name)
        for entry in sorted(root.iterdir())
        if entry.is_dir() and (entry / "blueprint.yaml").is_file()
    ]


def load_blueprint(name: str) -> Blueprint:
    root = blueprints_dir()
    if not BLUEPRINT_NAME.match(name or ""):
        raise UnknownBlueprint(name, root)
    folder = root / name
    spec_file = folder / "blueprint.yaml"
    if not spec_file.is_file() or not folder.resolve().is_relative_to(root):
        raise UnknownBlueprint(name, root)
    try:
        raw = yaml.safe_load(spec_file.read_text())
    except yaml.YAMLError as exc:
        raise BlueprintError(f"blueprint {name}: blueprint.yaml is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise BlueprintError(f"blueprint {name}: blueprint.yaml must be a mapping")
    return _parse(name, folder.resolve(), raw)


def _parse(name: str, folder: Path, raw: dict[str, Any]) -> Blueprint:
    def fail(message: str) -> BlueprintError:
        return BlueprintError(f"blueprint {name}: {message}")

    if raw.get("name") != name:
        raise fail(f"name {raw.get('name')!r} must equal the folder name {name!r}")
    for key in ("title", "version"):
        if not isinstance(raw.get(key), str | int | float) or not str(raw.get(key)).strip():
            raise fail(f"{key} is required")
    parameters = raw.get("parameters") or {"type": "object"}
    if not isinstance(parameters, dict):
        raise fail("parameters must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise fail(f"parameters is not a valid JSON Schema: {exc.message}") from exc

    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages:
        raise fail("stages must be a non-empty list of stage kinds")
    for kind in stages:
        if kind not in STAGE_KINDS:
            raise fail(f"unknown stage kind {kind!r} (known: {', '.join(sorted(STAGE_KINDS))})")
    if len(set(stages)) != len(stages):
        raise fail("a stage kind appears twice in stages")

    approval = raw.get("approval") or {}
    approval_plan = approval.get("plan", "on_destroy")
    if approval_plan not in APPROVAL_MODES:
        raise fail(f"approval.plan must be one of {', '.join(APPROVAL_MODES)}")
    timeout_hours = _positive_number(
        approval.get("timeout_hours", DEFAULT_APPROVAL_TIMEOUT_HOURS),
        "approval.timeout_hours",
        fail,
    )

    return Blueprint(
        name=name,
        title=str(raw["title"]),
        description=str(raw.get("description") or "").strip(),
        version=str(raw["version"]),
        parameters=parameters,
        stages=tuple(stages),
        path=folder,
        approval_plan=approval_plan,
        approval_timeout_hours=timeout_hours,
        hooks=_parse_hooks(name, folder, raw.get("hooks") or {}, fail),
        policy=_parse_policy(raw.get("policy") or {}, fail),
        databases=tuple(_parse_databases(name, folder, raw.get("databases") or [], fail)),
    )


def _positive_number(value: Any, label: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise fail(f"{label} must be a positive number")
    return float(value)


def _parse_hooks(name: str, folder: Path, raw: dict[str, Any], fail: Any) -> Hooks:
    if not isinstance(raw, dict):
        raise fail("hooks must be a mapping")
    builtins: dict[str, tuple[str, ...]] = {}
    for phase in ("pre", "post"):
        names = raw.get(phase) or []
        if not isinstance(names, list):
            raise fail(f"hooks.{phase} must be a list of built-in hook names")
        for hook in names:
            if hook not in BUILTIN_HOOKS:
                raise fail(
                    f"unknown built-in hook {hook!r} in hooks.{phase} "
                    f"(known: {', '.join(sorted(BUILTIN_HOOKS))})"
                )
        builtins[phase] = tuple(names)
    timeout = _positive_number(
        raw.get("timeout_minutes", DEFAULT_HOOK_TIMEOUT_MINUTES), "hooks.timeout_minutes", fail
    )
    return Hooks(
        pre=builtins["pre"],
        post=builtins["post"],
        pre_scripts=_hook_scripts(name, folder, "pre", fail),
        post_scripts=_hook_scripts(name, folder, "post", fail),
        timeout_minutes=timeout,
    )


def _hook_scripts(name: str, folder: Path, phase: str, fail: Any) -> tuple[Path, ...]:
    """The executable scripts in hooks/<phase>/, by name; anything leaving the folder is refused."""
    hook_dir = folder / "hooks" / phase
    if not hook_dir.exists():
        return ()
    if hook_dir.is_symlink() or not hook_dir.resolve().is_relative_to(folder):
        raise fail(f"hooks/{phase} leaves the blueprint folder")
    scripts = []
    for entry in sorted(hook_dir.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith(("~", ".md")):
            continue
        resolved = entry.resolve()
        if not resolved.is_relative_to(folder):
            raise fail(
                f"hook hooks/{phase}/{entry.name} is a link that leaves the blueprint folder"
            )
        if not resolved.is_file():
            raise fail(f"hook hooks/{phase}/{entry.name} is not a file")
        if not os.access(resolved, os.X_OK):
            raise fail(f"hook hooks/{phase}/{entry.name} is not executable")
        scripts.append(resolved)
    return tuple(scripts)


def _parse_policy(raw: dict[str, Any], fail: Any) -> dict[str, Policy]:
    if not isinstance(raw, dict):
        raise fail("policy must be a mapping of purpose to settings")
    policies = {}
    for purpose, values in raw.items():
        if purpose not in PURPOSES:
            raise fail(f"policy for unknown purpose {purpose!r} (known: {', '.join(PURPOSES)})")
        if not isinstance(values, dict):
            raise fail(f"policy.{purpose} must be a mapping")
        groups = values.get("auto_approve") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise fail(f"policy.{purpose}.auto_approve must be a list of group names")
        numbers: dict[str, int | None] = {}
        for key in ("default_ttl_days", "max_ttl_days", "max_active_per_user"):
            number = values.get(key)
            if number is not None and (
                isinstance(number, bool) or not isinstance(number, int) or number < 1
            ):
                raise fail(f"policy.{purpose}.{key} must be a positive whole number")
            numbers[key] = number
        default_ttl, max_ttl = numbers["default_ttl_days"], numbers["max_ttl_days"]
        if default_ttl and max_ttl and default_ttl > max_ttl:
            raise fail(f"policy.{purpose}.default_ttl_days is above max_ttl_days")
        policies[purpose] = Policy(
            auto_approve=tuple(groups),
            default_ttl_days=default_ttl,
            max_ttl_days=max_ttl,
            max_active_per_user=numbers["max_active_per_user"],
        )
    return policies


def _parse_databases(name: str, folder: Path, raw: list[Any], fail: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise fail("databases must be a list")
    databases = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"databases[{index}]"
        if not isinstance(entry, dict):
            raise fail(f"{where} must be a mapping")
        service = entry.get("service")
        if not isinstance(service, str) or not re.match(r"^[a-z][a-z0-9_]{0,30}$", service):
            raise fail(f"{where}.service must be a service name")
        if service in seen:
            raise fail(f"{where}: service {service!r} is declared twice")
        seen.add(service)
        if entry.get("driver") not in DB_DRIVERS:
            raise fail(f"{where}.driver must be one of {', '.join(DB_DRIVERS)}")
        scrub = entry.get("scrub_sql") or []
        if not isinstance(scrub, list):
            raise fail(f"{where}.scrub_sql must be a list of files")
        for relative in scrub:
            if not resolve_inside(folder, str(relative), name).is_file():
                raise fail(f"{where}.scrub_sql: file {relative!r} does not exist")
        databases.append(dict(entry))
    return databases
