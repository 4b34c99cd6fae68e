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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError

from pipelines import schema_patterns
from pipelines.clients.postgres import CONNECTION_NAME, CONNECTION_NAME_RULE
from pipelines.dbclone.masking import MaskingError, parse_rules
from pipelines.input_limits import InputLimits, limit_problems, nul_problems
from pipelines.parity_rules import Parity, parse_parity
from pipelines.stages import BUILTIN_HOOKS, STAGE_KINDS, TEARDOWN_ONLY_STAGES
from pipelines.yaml_input import YamlInputError, load_yaml

# Every name pattern of this module is used with fullmatch: the whole string, no "$" quirk.
BLUEPRINT_NAME = re.compile(r"[a-z0-9-]+")
APPROVAL_MODES = ("always", "on_destroy", "never")
PURPOSES = ("demo", "qa", "loadtest", "standby")
DB_DRIVERS = ("aws_rds_snapshot", "postgres_logical")
DEFAULT_HOOK_TIMEOUT_MINUTES = 15
DEFAULT_APPROVAL_TIMEOUT_HOURS = 72
DEFAULT_DRIFT_CHECK_HOURS = 24  # daily
# A config breaking many rules (a list of 10,000 bad items) is reported in part.
MAX_REPORTED_PROBLEMS = 50
MAX_PROBLEM_MESSAGE = 300  # characters; jsonschema quotes whole values in its messages


def _unique_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]) -> Any:
    """`x-unique-keys: [name]` on an array of objects: no two items share those values."""
    if not validator.is_type(instance, "array"):
        return
    seen: dict[tuple[Any, ...], int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict) or not all(key in item for key in keys):
            continue
        value = tuple(item[key] for key in keys)
        if value in seen:
            shown = ", ".join(f"{key}={item[key]!r}" for key in keys)
            yield ValidationError(f"{shown} is used by item {seen[value]} already", path=[index])
        else:
            seen[value] = index


# Draft 2020-12 plus the one portal keyword, x-unique-keys, with patterns matched as
# JSON Schema means them (pipelines.schema_patterns: "$" is the end of the string).
ConfigValidator = validators.extend(
    Draft202012Validator,
    {
        "x-unique-keys": _unique_keys,
        "pattern": schema_patterns.pattern,
    },
)


class BlueprintError(Exception):
    """A blueprint that cannot be used; the message names the blueprint and the problem."""


class UnknownBlueprint(BlueprintError):
    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(f"unknown blueprint {name!r}: no such blueprint in {directory}")
        self.name = name
        self.directory = directory


# The config key that once held an account's name, which now comes from the account itself.
ACCOUNT_NAME_KEY = "account_name"


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
    # How often the schedule checks a ready account of this purpose for drift.
    drift_check_hours: int = DEFAULT_DRIFT_CHECK_HOURS


@dataclass(frozen=True)
class Hooks:
    pre: tuple[str, ...] = ()  # built-in hook names, run before the folder's scripts
    post: tuple[str, ...] = ()
    pre_scripts: tuple[Path, ...] = ()  # absolute paths inside the blueprint folder
    post_scripts: tuple[Path, ...] = ()
    timeout_minutes: float = DEFAULT_HOOK_TIMEOUT_MINUTES
    sensitive_outputs: bool = False  # hooks see sensitive Terraform outputs in TF_OUTPUTS_JSON


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
    limits: InputLimits = field(default_factory=InputLimits)
    parity: Parity | None = None
    # teardown.close_account: a teardown closes the cloud account (Organizations) at its end.
    close_account: bool = False

    @property
    def terraform_dir(self) -> Path:
        return self.path / "terraform"

    def policy_for(self, purpose: str) -> Policy:
        return self.policy.get(purpose, Policy())

    def validate_config(self, config: Any) -> dict[str, Any]:
        """The config with defaults applied, or ConfigInvalid listing the problems.

        The limits (depth, size, string length) are checked first, by a loop, so
        nothing recursive ever sees an over-limit value; then the JSON Schema, and that
        no string holds a NUL (PostgreSQL's JSON cannot store one). At most
        MAX_REPORTED_PROBLEMS problems are listed, then "... and N more problems".
        """
        if not isinstance(config, dict):
            raise ConfigInvalid([ConfigProblem("$", "the config must be a mapping")])
        over = limit_problems(config, limits=self.limits)
        if over:
            raise ConfigInvalid(_reported([ConfigProblem(path, text) for path, text in over]))
        filled = apply_defaults(self.parameters, copy.deepcopy(config))
        validator = ConfigValidator(schema_patterns.validation_schema(self.parameters))
        found = [(error.json_path, error.message) for error in validator.iter_errors(filled)]
        found += nul_problems(config)
        problems = [ConfigProblem(path, _shortened(text)) for path, text in sorted(found)]
        if problems:
            raise ConfigInvalid(_reported(problems))
        return filled

    def config_for_account(self, config: Any, *, name: str) -> Any:
        """The config of account ``name``, whose name is the one source of its name.

        A config may still carry ``account_name`` (configs written before it was dropped):
        equal to the account's name it is dropped (or, for a blueprint that still declares
        the parameter, filled with the name); any other value is refused with ConfigInvalid
        naming ``$.account_name``. Templates see the name as ``account.name``.
        """
        if not isinstance(config, dict):
            return config
        given = config.get(ACCOUNT_NAME_KEY, name)
        if given != name:
            raise ConfigInvalid(
                [
                    ConfigProblem(
                        f"$.{ACCOUNT_NAME_KEY}",
                        f"must be the account's name {name!r} or left out: an account's "
                        "name is the one source of its name",
                    )
                ]
            )
        rest = {key: value for key, value in config.items() if key != ACCOUNT_NAME_KEY}
        if ACCOUNT_NAME_KEY in (self.parameters.get("properties") or {}):
            rest[ACCOUNT_NAME_KEY] = name
        return rest

    def resolve_file(self, relative: str) -> Path:
        """A file of this blueprint, refusing any path that leaves the blueprint folder."""
        return resolve_inside(self.path, relative, self.name)


def _shortened(message: str) -> str:
    """A long message cut in its middle, where jsonschema quotes the value: the end says why."""
    if len(message) <= MAX_PROBLEM_MESSAGE:
        return message
    head = MAX_PROBLEM_MESSAGE // 2
    return message[:head] + " ... " + message[-(MAX_PROBLEM_MESSAGE - head - 5) :]


def _reported(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    if len(problems) <= MAX_REPORTED_PROBLEMS:
        return problems
    more = len(problems) - MAX_REPORTED_PROBLEMS
    return [*problems[:MAX_REPORTED_PROBLEMS], ConfigProblem("$", f"... and {more} more problems")]


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


def blueprint_names() -> list[str]:
    root = blueprints_dir()
    if not root.is_dir():
        return []
    return [
        entry.name
        for entry in sorted(root.iterdir())
        if entry.is_dir() and (entry / "blueprint.yaml").is_file()
    ]


# What a file looked like when a blueprint was read from it: (device, inode, size, mtime,
# mode), None when it did not exist. Any change to it reads the blueprint again.
FileStamp = tuple[int, int, int, int, int] | None


@dataclass(frozen=True)
class _Loaded:
    stamps: tuple[tuple[Path, FileStamp], ...]
    blueprint: Blueprint


SETTLED_NS = 2_000_000_000
# Parsed blueprints by the path of their blueprint.yaml: a stage, a page, an API call
# each loads its blueprint, and reading and checking it again costs milliseconds.
_loaded: dict[Path, _Loaded] = {}
_loaded_lock = threading.Lock()


def _stamp(path: Path) -> FileStamp:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_mode)


def _read_from(blueprint: Blueprint, spec_file: Path) -> tuple[Path, ...]:
    """Every file and folder the blueprint was read from: its YAML, the hook folders (a
    script added or removed changes the folder), the scripts, the scrub files."""
    hooks = blueprint.hooks
    scrub = [blueprint.path / file for entry in blueprint.databases for file in entry["scrub_sql"]]
    folders = [spec_file.parent / "hooks" / phase for phase in ("pre", "post")]
    return (spec_file, *folders, *hooks.pre_scripts, *hooks.post_scripts, *scrub)


def list_blueprints() -> list[Blueprint]:
    return [load_blueprint(name) for name in blueprint_names()]


def load_blueprint(name: str) -> Blueprint:
    """The blueprint of that name, read and checked again only when one of its files changed."""
    root = blueprints_dir()
    if not BLUEPRINT_NAME.fullmatch(name or ""):
        raise UnknownBlueprint(name, root)
    folder = root / name
    spec_file = folder / "blueprint.yaml"
    if not spec_file.is_file() or not folder.resolve().is_relative_to(root):
        raise UnknownBlueprint(name, root)
    loaded = _loaded.get(spec_file)
    if loaded is not None and all(_stamp(path) == stamp for path, stamp in loaded.stamps):
        return loaded.blueprint
    # Stamped before reading: a change made while it is read is seen by the next load.
    before = _stamp(spec_file)
    blueprint = _read_blueprint(name=name, folder=folder, spec_file=spec_file)
    paths = _read_from(blueprint, spec_file)
    stamps = ((spec_file, before), *((path, _stamp(path)) for path in paths[1:]))
    # A file changed within the file system's timestamp granularity of this moment may
    # change again with the same stamp: such a blueprint is read afresh until it settles.
    settled = time.time_ns() - SETTLED_NS
    if all(stamp is None or stamp[3] < settled for _, stamp in stamps):
        with _loaded_lock:
            _loaded[spec_file] = _Loaded(stamps=stamps, blueprint=blueprint)
    return blueprint


def _read_blueprint(*, name: str, folder: Path, spec_file: Path) -> Blueprint:
    try:
        raw = load_yaml(spec_file.read_bytes(), source="blueprint.yaml")
    except YamlInputError as exc:
        raise BlueprintError(f"blueprint {name}: {exc.message}") from exc
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
    bad_patterns = schema_patterns.pattern_problems(parameters)
    if bad_patterns:
        raise fail(f"parameters: a pattern is not a regular expression: {bad_patterns[0]}")

    stages = raw.get("stages")
    if not isinstance(stages, list) or not stages:
        raise fail("stages must be a non-empty list of stage kinds")
    for kind in stages:
        if kind not in STAGE_KINDS or kind in TEARDOWN_ONLY_STAGES:
            known = ", ".join(sorted(set(STAGE_KINDS) - TEARDOWN_ONLY_STAGES))
            raise fail(f"unknown stage kind {kind!r} (known: {known})")
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

    policy = _parse_policy(raw.get("policy") or {}, fail)
    teardown = raw.get("teardown") or {}
    if not isinstance(teardown, dict):
        raise fail("teardown must be a mapping (close_account: true or false)")
    close_account = _flag(teardown.get("close_account", False), "teardown.close_account", fail)
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
        policy=policy,
        databases=tuple(_parse_databases(name, folder, raw.get("databases") or [], fail)),
        limits=_parse_limits(raw.get("limits") or {}, fail),
        # The purposes a clone may have: those with a policy, or all when there is none.
        parity=parse_parity(
            raw.get("parity"), parameters=parameters, purposes=tuple(policy) or PURPOSES, fail=fail
        ),
        close_account=close_account,
    )


def _parse_limits(raw: Any, fail: Any) -> InputLimits:
    """``limits:`` tightens the config limits of pipelines.input_limits; it cannot loosen them."""
    if not isinstance(raw, dict):
        raise fail("limits must be a mapping")
    defaults = InputLimits()
    known = {"max_depth", "max_bytes", "max_string_length"}
    unknown = set(raw) - known
    if unknown:
        raise fail(f"limits: unknown setting(s) {', '.join(sorted(map(str, unknown)))}")
    values: dict[str, int] = {}
    for key in sorted(known):
        ceiling = getattr(defaults, key)
        value = raw.get(key, ceiling)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
            raise fail(f"limits.{key} must be a whole number from 1 to {ceiling}")
        values[key] = value
    return InputLimits(**values)


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
        sensitive_outputs=_flag(
            raw.get("sensitive_outputs", False), "hooks.sensitive_outputs", fail
        ),
    )


def _flag(value: Any, label: str, fail: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{label} must be true or false")
    return value


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
        for key in ("default_ttl_days", "max_ttl_days", "max_active_per_user", "drift_check_hours"):
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
            drift_check_hours=numbers["drift_check_hours"] or DEFAULT_DRIFT_CHECK_HOURS,
        )
    return policies


# --- databases: (service, driver) entries cloned by db_clone, switched by dns_cutover ----------
#
#   databases:
#     - service: orders                 # one entry per service database
#       driver: postgres_logical        # or aws_rds_snapshot
#       dns: orders-db                  # optional record; relative names get the zone appended
#       scrub_sql: [scrub/orders.sql]   # files in the blueprint, run against the clone
#       # postgres_logical only:
#       source: PROD_ORDERS             # connection names: PORTAL_CONNECTION_<NAME> holds the URL
#       target: CLONES
#       masking: {users.email: email, users.note: {fixed: ""}}  # [schema.]table.column
#       masking_strict: false           # true: unruled personal-looking columns are errors
#       jobs: 2                         # tables copied at once (1-32)
#       golden: true                    # or {max_age_hours: 24, refresh_max_age_hours: 1}:
#                                       # mask once into a golden copy, copy it per account
#       # aws_rds_snapshot only:
#       source: {account_id: "111111111111", region: us-east-1, instance: orders-prod}
#       # ...or source: {parameter: NAME}, a config parameter holding those three keys
#       use_automated_snapshot: false   # copy the latest automated snapshot instead of a new one
#       database_name: postgres         # the database scrub_sql runs in
#       instance_class: db.t4g.medium   # optional; default: the snapshot's
#       target_region: eu-west-1        # optional; default: the source's
#       timeout_minutes: 240
#       golden: true                    # clone a masked golden snapshot made (and scrubbed)
#                                       # in the data-preparation account, as above

DB_COMMON_KEYS = frozenset({"service", "driver", "scrub_sql", "dns"})
DB_DRIVER_KEYS = {
    "postgres_logical": frozenset(
        {"source", "target", "masking", "masking_strict", "jobs", "golden"}
    ),
    "aws_rds_snapshot": frozenset(
        {
            "source",
            "use_automated_snapshot",
            "database_name",
            "instance_class",
            "target_region",
            "timeout_minutes",
            "golden",
        }
    ),
}
DB_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
# A record name, relative ("orders-db") or absolute ("orders-db.qa.internal.").
DNS_RECORD_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?"
)
AWS_ACCOUNT_ID = re.compile(r"[0-9]{12}")
AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
RDS_INSTANCE_ID = re.compile(r"[a-zA-Z](?:[a-zA-Z0-9]|-(?!-)){0,62}(?<!-)")
DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
DB_JOBS_MAX = 32
# Golden copies: a provision copies one taken within max_age_hours, a refresh-data one
# taken within refresh_max_age_hours (else a new one is built first).
GOLDEN_DEFAULTS = {"max_age_hours": 24.0, "refresh_max_age_hours": 1.0}
GOLDEN_MAX_HOURS = 24.0 * 366
RDS_SOURCE_KEYS = frozenset({"account_id", "region", "instance"})


def _parse_databases(name: str, folder: Path, raw: list[Any], fail: Any) -> list[dict[str, Any]]:
    """Every database entry checked in full, returned normalised (defaults filled in).

    The clone stages trust these entries: connection names, masking rules (syntax
    only; tables and columns are checked against the source before any copy),
    scrub files inside the blueprint, DNS names, the RDS source.
    """
    if not isinstance(raw, list):
        raise fail("databases must be a list")
    databases = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"databases[{index}]"
        if not isinstance(entry, dict):
            raise fail(f"{where} must be a mapping")
        service = entry.get("service")
        if not isinstance(service, str) or not DB_SERVICE_NAME.fullmatch(service):
            raise fail(f"{where}.service must be a service name")
        if service in seen:
            raise fail(f"{where}: service {service!r} is declared twice")
        seen.add(service)
        driver = entry.get("driver")
        if driver not in DB_DRIVERS:
            raise fail(f"{where}.driver must be one of {', '.join(DB_DRIVERS)}")
        unknown = set(entry) - DB_COMMON_KEYS - DB_DRIVER_KEYS[driver]
        if unknown:
            hint = ""
            if "masking" in unknown:
                hint = " (masking is for postgres_logical; use scrub_sql)"
            raise fail(
                f"{where}: unknown setting(s) {', '.join(sorted(map(str, unknown)))} "
                f"for driver {driver}{hint}"
            )
        parsed: dict[str, Any] = {"service": service, "driver": driver}
        parsed["scrub_sql"] = _parse_scrub_files(name, folder, entry.get("scrub_sql"), where, fail)
        dns = entry.get("dns")
        if dns is not None and (not isinstance(dns, str) or not DNS_RECORD_NAME.fullmatch(dns)):
            raise fail(f"{where}.dns must be a DNS record name such as orders-db")
        parsed["dns"] = dns or ""
        if driver == "postgres_logical":
            parsed.update(_parse_logical_database(entry, where, fail))
        else:
            parsed.update(_parse_rds_database(entry, where, fail))
        databases.append(parsed)
    return databases


def _parse_scrub_files(name: str, folder: Path, raw: Any, where: str, fail: Any) -> list[str]:
    scrub = raw or []
    if not isinstance(scrub, list) or not all(isinstance(item, str) for item in scrub):
        raise fail(f"{where}.scrub_sql must be a list of files")
    for relative in scrub:
        if not resolve_inside(folder, relative, name).is_file():
            raise fail(f"{where}.scrub_sql: file {relative!r} does not exist")
    return list(scrub)


def _parse_logical_database(entry: dict[str, Any], where: str, fail: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key in ("source", "target"):
        value = entry.get(key)
        if not isinstance(value, str) or not CONNECTION_NAME.fullmatch(value):
            raise fail(
                f"{where}.{key} must name a connection ({CONNECTION_NAME_RULE}), defined by "
                "the environment variable PORTAL_CONNECTION_<NAME>"
            )
        parsed[key] = value
    masking = entry.get("masking") or {}
    if not isinstance(masking, dict):
        raise fail(f"{where}.masking must be a mapping of 'table.column': transformer")
    try:
        parse_rules(masking)
    except MaskingError as exc:
        raise fail(f"{where}.masking: {exc}") from None
    parsed["masking"] = {str(key): value for key, value in masking.items()}
    strict = entry.get("masking_strict", False)
    if not isinstance(strict, bool):
        raise fail(f"{where}.masking_strict must be true or false")
    parsed["masking_strict"] = strict
    jobs = entry.get("jobs", 2)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= DB_JOBS_MAX:
        raise fail(f"{where}.jobs must be a whole number from 1 to {DB_JOBS_MAX}")
    parsed["jobs"] = jobs
    parsed["golden"] = _parse_golden(entry.get("golden", False), where, fail)
    return parsed


def _parse_golden(raw: Any, where: str, fail: Any) -> dict[str, float] | None:
    """``golden: true`` or ``{max_age_hours, refresh_max_age_hours}``; None when off."""
    if raw is False or raw is None:
        return None
    if raw is True:
        return dict(GOLDEN_DEFAULTS)
    if not isinstance(raw, dict):
        raise fail(f"{where}.golden must be true, false or a mapping of max ages")
    unknown = set(raw) - set(GOLDEN_DEFAULTS)
    if unknown:
        raise fail(f"{where}.golden: unknown setting(s) {', '.join(sorted(map(str, unknown)))}")
    golden = dict(GOLDEN_DEFAULTS)
    for key, value in raw.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value <= GOLDEN_MAX_HOURS
        ):
            raise fail(f"{where}.golden.{key} must be a number of hours above 0, at most 8784")
        golden[key] = float(value)
    return golden


def _parse_rds_database(entry: dict[str, Any], where: str, fail: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    source = entry.get("source")
    if isinstance(source, dict) and set(source) == {"parameter"}:
        # The source comes from the account's config: {account_id, region, instance}.
        parameter = source["parameter"]
        if not isinstance(parameter, str) or not parameter:
            raise fail(f"{where}.source.parameter must name a config parameter")
        parsed["source"] = {"parameter": parameter}
    elif isinstance(source, dict):
        problem = rds_source_problem(source)
        if problem:
            raise fail(f"{where}.source: {problem}")
        parsed["source"] = {key: source[key] for key in sorted(RDS_SOURCE_KEYS)}
    else:
        raise fail(
            f"{where}.source must be {{account_id, region, instance}} or {{parameter: NAME}}"
        )
    automated = entry.get("use_automated_snapshot", False)
    if not isinstance(automated, bool):
        raise fail(f"{where}.use_automated_snapshot must be true or false")
    parsed["use_automated_snapshot"] = automated
    database_name = entry.get("database_name", "postgres")
    if not isinstance(database_name, str) or not DB_NAME.fullmatch(database_name):
        raise fail(f"{where}.database_name must be a database name")
    parsed["database_name"] = database_name
    for key in ("instance_class", "target_region"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise fail(f"{where}.{key} must be a string")
        if key == "target_region" and value is not None and not AWS_REGION.fullmatch(value):
            raise fail(f"{where}.target_region must be an AWS region such as eu-west-1")
        parsed[key] = value
    timeout = entry.get("timeout_minutes", 240)
    parsed["timeout_minutes"] = _positive_number(timeout, f"{where}.timeout_minutes", fail)
    parsed["golden"] = _parse_golden(entry.get("golden", False), where, fail)
    return parsed


def rds_source_problem(source: Any) -> str:
    """'' when ``source`` is a valid {account_id, region, instance}, else what is wrong."""
    if not isinstance(source, dict) or set(source) != RDS_SOURCE_KEYS:
        return "must have exactly account_id, region and instance"
    account_id = source["account_id"]
    if not isinstance(account_id, str) or not AWS_ACCOUNT_ID.fullmatch(account_id):
        return 'account_id must be 12 digits, quoted ("111111111111")'
    if not isinstance(source["region"], str) or not AWS_REGION.fullmatch(source["region"]):
        return "region must be an AWS region such as us-east-1"
    if not isinstance(source["instance"], str) or not RDS_INSTANCE_ID.fullmatch(source["instance"]):
        return "instance must be an RDS instance identifier"
    return ""
