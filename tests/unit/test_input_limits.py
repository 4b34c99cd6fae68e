"""Bad input is refused in bounded time with the field named: patterns, limits, YAML."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.blueprints import (
    MAX_REPORTED_PROBLEMS,
    BlueprintError,
    ConfigInvalid,
    load_blueprint,
)
from pipelines.input_limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_STRING_LENGTH,
    InputLimits,
    limit_problems,
)
from pipelines.schema_patterns import compile_pattern
from pipelines.yaml_input import (
    MAX_YAML_ALIASES,
    MAX_YAML_BYTES,
    YamlInputError,
    load_config_file,
    load_yaml,
)

SHIPPED = Path(__file__).resolve().parents[2] / "blueprints"

OPEN = {
    "name": "open",
    "title": "Open",
    "version": "1",
    "parameters": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z-]+$"},
            "tag": {"type": "string", "pattern": "ab"},
            "price": {"type": "string", "pattern": "^[0-9]+\\$$"},
            "digits": {"type": "string", "pattern": "^\\d+$"},
            "labels": {
                "type": "object",
                "patternProperties": {"^[a-z]+$": {"type": "string"}},
                "additionalProperties": False,
            },
            "items": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]$"}},
        },
    },
    "stages": ["render"],
}


@pytest.fixture
def bp_root(tmp_path: Path, settings: Any) -> Path:
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path
    return tmp_path


def write_blueprint(root: Path, spec: dict[str, Any]) -> None:
    folder = root / spec["name"]
    (folder / "terraform").mkdir(parents=True)
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))


def problems(blueprint_name: str, config: Any) -> list[str]:
    with pytest.raises(ConfigInvalid) as invalid:
        load_blueprint(blueprint_name).validate_config(config)
    return [str(problem) for problem in invalid.value.problems]


def nested(depth: int) -> dict[str, Any]:
    """A config whose mapping holds `depth` levels of collections in all (itself included)."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"deep": value}


# --- patterns: JSON Schema's "$" is the end of the string ---------------------------------


def test_a_trailing_newline_does_not_pass_an_anchored_pattern(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    assert problems("open", {"name": "nl-probe\n"}) == [
        "$.name: 'nl-probe\\n' does not match '^[a-z-]+$'"
    ]
    assert problems("open", {"items": ["a", "b\n"]}) == [
        "$.items[1]: 'b\\n' does not match '^[a-z]$'"
    ]
    assert load_blueprint("open").validate_config({"name": "nl-probe"}) == {"name": "nl-probe"}


def test_patterns_keep_json_schema_meaning_otherwise(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    blueprint = load_blueprint("open")
    # Unanchored patterns still search; an escaped "\$" is a dollar sign.
    assert blueprint.validate_config({"tag": "xaby", "price": "12$"})["price"] == "12$"
    assert problems("open", {"price": "12$\n"}) == [
        "$.price: '12$\\n' does not match '^[0-9]+\\\\$$'"
    ]
    # \d is [0-9] as in ECMA-262, not every Unicode digit.
    assert problems("open", {"digits": "\u0661\u0662"})[0].startswith("$.digits: ")


def test_pattern_properties_match_whole_keys(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    assert load_blueprint("open").validate_config({"labels": {"team": "x"}})
    assert problems("open", {"labels": {"team\n": "x"}}) == [
        "$.labels: 'team\\n' does not match any of the regexes: '(?a)^[a-z]+\\\\Z'"
    ]


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^a$", "a", True),
        ("^a$", "a\n", False),
        ("a$|^b", "xa", True),
        ("[$]", "$", True),
        ("[]$]x$", "$x", True),
        ("[]$]x$", "$x\n", False),
        ("(?=.{1,3}$)ab", "ab\n", False),
        ("^a\\$", "a$", True),
    ],
)
def test_compiled_patterns(pattern: str, text: str, matches: bool) -> None:
    assert bool(compile_pattern(pattern).search(text)) is matches


def test_a_pattern_that_is_no_regex_is_refused_at_load(bp_root: Path) -> None:
    spec = {**OPEN, "parameters": {"type": "object", "properties": {"x": {"pattern": "(?u)a"}}}}
    write_blueprint(bp_root, spec)
    with pytest.raises(BlueprintError, match=r"blueprint open: parameters: a pattern .*'\(\?u\)a'"):
        load_blueprint("open")


# --- limits: depth, size, string length ---------------------------------------------------


def test_depth_limit_names_the_path_and_takes_no_recursion(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    blueprint = load_blueprint("open")
    assert blueprint.validate_config(nested(DEFAULT_MAX_DEPTH))
    found = problems("open", nested(DEFAULT_MAX_DEPTH + 1))
    assert found == ["$.deep" + "[0]" * (DEFAULT_MAX_DEPTH - 1) + ": nested deeper than 32 levels"]
    # 100,000 levels would overflow Python's stack in any recursive walk.
    assert problems("open", nested(100_000))[0].endswith("nested deeper than 32 levels")


def test_a_long_string_is_refused_naming_its_field(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    assert problems("open", {"tag": "ab" * 500_000}) == [
        f"$.tag: 1000000 characters long, more than the limit of {DEFAULT_MAX_STRING_LENGTH}"
    ]
    key = "k" * (DEFAULT_MAX_STRING_LENGTH + 1)
    assert problems("open", {"labels": {key: "x"}}) == [
        f"$.labels['{key[:37]}...']: the key is 4097 characters long, more than the limit of 4096"
    ]


def test_total_size_is_limited_in_bounded_time() -> None:
    limits = InputLimits()
    assert limit_problems({"a": ["x" * 100] * 2000}, limits=limits) == []
    huge = {"a": list(range(10_000_000))}
    started = time.monotonic()
    assert limit_problems(huge, limits=limits) == [
        ("$", f"larger than the limit of {DEFAULT_MAX_BYTES} bytes (as JSON)")
    ]
    assert time.monotonic() - started < 30  # unbounded work, not a speed target (shared CI)


def test_a_blueprint_may_tighten_the_limits_but_not_loosen_them(bp_root: Path) -> None:
    write_blueprint(bp_root, {**OPEN, "limits": {"max_string_length": 10, "max_depth": 3}})
    assert problems("open", {"tag": "ab" * 6}) == [
        "$.tag: 12 characters long, more than the limit of 10"
    ]
    assert problems("open", {"labels": {"a": [[1]]}}) == [
        "$.labels.a[0]: nested deeper than 3 levels"
    ]
    write_blueprint(bp_root, {**OPEN, "name": "loose", "limits": {"max_bytes": 10**9}})
    with pytest.raises(BlueprintError, match=r"limits.max_bytes must be a whole number from 1"):
        load_blueprint("loose")
    write_blueprint(bp_root, {**OPEN, "name": "typo", "limits": {"max_size": 1}})
    with pytest.raises(BlueprintError, match=r"limits: unknown setting\(s\) max_size"):
        load_blueprint("typo")


def test_many_problems_are_reported_in_part(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    found = problems("open", {"items": ["BAD"] * 500})
    assert len(found) == MAX_REPORTED_PROBLEMS + 1
    assert found[-1] == f"$: ... and {500 - MAX_REPORTED_PROBLEMS} more problems"


def test_a_long_value_is_not_quoted_whole_in_a_problem(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    (message,) = problems("open", {"name": "X" * 4000})
    assert len(message) < 400
    assert message.startswith("$.name: 'XXX") and message.endswith("X' does not match '^[a-z-]+$'")


def test_nul_characters_are_refused_with_the_other_problems(bp_root: Path) -> None:
    write_blueprint(bp_root, OPEN)
    assert problems("open", {"tag": "ab\x00", "labels": {"a\x00": "x"}, "name": "B"}) == [
        "$.labels: 'a\\x00' does not match any of the regexes: '(?a)^[a-z]+\\\\Z'",
        "$.labels['a\x00']: must not contain NUL characters",
        "$.name: 'B' does not match '^[a-z-]+$'",
        "$.tag: must not contain NUL characters",
    ]


def test_shipped_sandbox_refuses_a_megabyte_dns_zone(settings: Any) -> None:
    settings.PORTAL_BLUEPRINTS_DIR = SHIPPED
    sandbox = load_blueprint("sandbox")
    config = yaml.safe_load((SHIPPED / "sandbox" / "examples" / "demo.yaml").read_text())
    with pytest.raises(ConfigInvalid) as invalid:
        sandbox.validate_config({**config, "dns_zone": "a" * 1_000_000 + ".internal"})
    assert [p.path for p in invalid.value.problems] == ["$.dns_zone"]
    with pytest.raises(ConfigInvalid) as invalid:
        sandbox.validate_config({**config, "dns_zone": "a." * 200 + "internal"})
    assert [p.path for p in invalid.value.problems] == ["$.dns_zone"]


def test_every_string_parameter_of_the_shipped_blueprints_is_bounded(settings: Any) -> None:
    settings.PORTAL_BLUEPRINTS_DIR = SHIPPED
    unbounded = []
    for name in ("sandbox", "service-platform"):
        stack = [("$", load_blueprint(name).parameters)]
        while stack:
            path, schema = stack.pop()
            if (
                schema.get("type") == "string"
                and "maxLength" not in schema
                and "enum" not in schema
            ):
                unbounded.append(f"{name} {path}")
            for key, sub in schema.get("properties", {}).items():
                stack.append((f"{path}.{key}", sub))
            if isinstance(schema.get("items"), dict):
                stack.append((f"{path}[]", schema["items"]))
    assert unbounded == []


# --- YAML ---------------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghijk"[: levels - 1]:
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
        previous = name
    return text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (billion_laughs(), "holds more than 100000 values once its aliases are expanded"),
        ("a: &a [*a]\n", "holds more than 100000 values once its aliases are expanded"),
        (
            "b: &b {x: 1}\n" + "".join(f"k{i}: *b\n" for i in range(MAX_YAML_ALIASES + 1)),
            "more than 100 uses of anchors",
        ),
        ("x: [" * 70 + "]" * 70, "nested deeper than 64 levels"),
        ("x: [" * 5000 + "]" * 5000, "is not valid YAML"),
        ("n: " + "1" * 5000, "is not valid YAML"),
        ("a: 1\n---\nb: 2\n", "is not valid YAML"),
        ("x" * (MAX_YAML_BYTES + 1), "more than the limit of 1048576"),
    ],
)
def test_yaml_over_a_limit_is_refused_quickly(text: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(YamlInputError, match=message) as refused:
        load_yaml(text, source="config.yaml")
    assert str(refused.value).startswith("config.yaml")
    assert time.monotonic() - started < 30  # unbounded work, not a speed target (shared CI)


def test_yaml_within_the_limits_loads_with_anchors() -> None:
    text = "base: &base {size: small}\none: *base\ntwo:\n  <<: *base\n  size: large\n"
    assert load_yaml(text, source="x") == {
        "base": {"size": "small"},
        "one": {"size": "small"},
        "two": {"size": "large"},
    }
    assert load_yaml("", source="x") is None


def test_load_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cidr: 10.0.0.0/16\n")
    assert load_config_file(config) == {"cidr": "10.0.0.0/16"}
    config.write_text("")
    assert load_config_file(config) == {}
    config.write_text("- a\n")
    with pytest.raises(YamlInputError, match="must hold a mapping") as refused:
        load_config_file(config)
    assert refused.value.field == "--config"
    with pytest.raises(YamlInputError, match="no such file"):
        load_config_file(tmp_path / "missing.yaml")
    config.write_bytes(b"a: \xff\n")
    with pytest.raises(YamlInputError, match="not valid YAML"):
        load_config_file(config)


def test_blueprint_yaml_is_read_with_the_limits(bp_root: Path) -> None:
    folder = bp_root / "bomb"
    (folder / "terraform").mkdir(parents=True)
    (folder / "blueprint.yaml").write_text(billion_laughs() + "name: bomb\n")
    with pytest.raises(BlueprintError, match="blueprint bomb: blueprint.yaml: holds more than"):
        load_blueprint("bomb")
