"""Loading blueprints: the checks that let the rest of the portal trust them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pipelines.blueprints import (
    BlueprintError,
    ConfigInvalid,
    UnknownBlueprint,
    list_blueprints,
    load_blueprint,
)

MINIMAL = {
    "name": "tiny",
    "title": "Tiny",
    "version": "1",
    "parameters": {
        "type": "object",
        "properties": {
            "size": {"type": "string", "enum": ["s", "m"], "default": "s"},
            "services": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$"},
                        "database": {"type": "boolean", "default": False},
                    },
                },
            },
        },
    },
    "stages": ["render"],
}


@pytest.fixture
def bp_root(tmp_path: Path, settings) -> Path:
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path
    return tmp_path


def write_blueprint(root: Path, spec: dict, name: str = "tiny") -> Path:
    folder = root / name
    (folder / "terraform").mkdir(parents=True)
    (folder / "blueprint.yaml").write_text(yaml.safe_dump(spec))
    return folder


def test_shipped_blueprints_load(settings) -> None:
    settings.PORTAL_BLUEPRINTS_DIR = Path(__file__).resolve().parents[2] / "blueprints"
    names = {b.name: b for b in list_blueprints()}
    assert set(names) == {"sandbox", "service-platform"}
    sandbox = names["sandbox"]
    assert sandbox.stages[:2] == ("pre_hooks", "render")
    assert sandbox.policy_for("demo").max_active_per_user == 3
    assert names["service-platform"].hooks.pre == ("aws.create_account", "aws.assume_role")


def test_defaults_are_applied_recursively(bp_root: Path) -> None:
    write_blueprint(bp_root, MINIMAL)
    config = load_blueprint("tiny").validate_config({"services": [{"name": "web"}]})
    assert config == {"size": "s", "services": [{"name": "web", "database": False}]}


def test_every_config_problem_is_reported_with_its_json_path(bp_root: Path) -> None:
    write_blueprint(bp_root, MINIMAL)
    with pytest.raises(ConfigInvalid) as invalid:
        load_blueprint("tiny").validate_config(
            {"size": "xl", "services": [{"name": "ok"}, {"name": "Bad1"}, {}]}
        )
    lines = [str(problem) for problem in invalid.value.problems]
    assert lines == [
        "$.services[1].name: 'Bad1' does not match '^[a-z]+$'",
        "$.services[2]: 'name' is a required property",
        "$.size: 'xl' is not one of ['s', 'm']",
    ]


def test_unique_keys_in_arrays_of_objects(bp_root: Path) -> None:
    spec = {**MINIMAL, "parameters": {**MINIMAL["parameters"]}}
    spec["parameters"]["properties"] = {
        **MINIMAL["parameters"]["properties"],
        "services": {**MINIMAL["parameters"]["properties"]["services"], "x-unique-keys": ["name"]},
    }
    write_blueprint(bp_root, spec)
    with pytest.raises(ConfigInvalid) as invalid:
        load_blueprint("tiny").validate_config(
            {"services": [{"name": "web"}, {"name": "db"}, {"name": "web"}]}
        )
    assert [str(p) for p in invalid.value.problems] == [
        "$.services[2]: name='web' is used by item 0 already"
    ]


def test_config_must_be_a_mapping(bp_root: Path) -> None:
    write_blueprint(bp_root, MINIMAL)
    with pytest.raises(ConfigInvalid, match=r"\$: the config must be a mapping"):
        load_blueprint("tiny").validate_config(["not", "a", "mapping"])


def test_unknown_stage_kind_names_blueprint_and_kind(bp_root: Path) -> None:
    write_blueprint(bp_root, {**MINIMAL, "stages": ["render", "teleport"]})
    with pytest.raises(BlueprintError, match=r"blueprint tiny: unknown stage kind 'teleport'"):
        load_blueprint("tiny")


@pytest.mark.parametrize("name", ["../etc", "Tiny", "a/b", "", "tiny/../tiny", "tiny\n"])
def test_unknown_or_unsafe_names_are_refused_naming_the_directory(bp_root: Path, name: str) -> None:
    write_blueprint(bp_root, MINIMAL)
    with pytest.raises(UnknownBlueprint, match=str(bp_root)):
        load_blueprint(name)


def test_name_must_equal_folder(bp_root: Path) -> None:
    write_blueprint(bp_root, {**MINIMAL, "name": "other"})
    with pytest.raises(BlueprintError, match="must equal the folder name"):
        load_blueprint("tiny")


def test_invalid_json_schema_is_refused(bp_root: Path) -> None:
    write_blueprint(bp_root, {**MINIMAL, "parameters": {"type": "objekt"}})
    with pytest.raises(BlueprintError, match="not a valid JSON Schema"):
        load_blueprint("tiny")


def test_hook_scripts_in_name_order(bp_root: Path) -> None:
    folder = write_blueprint(bp_root, MINIMAL)
    hooks = folder / "hooks" / "pre"
    hooks.mkdir(parents=True)
    for name in ("20-second.sh", "10-first.sh"):
        (hooks / name).write_text("#!/bin/sh\n")
        (hooks / name).chmod(0o755)
    assert [p.name for p in load_blueprint("tiny").hooks.pre_scripts] == [
        "10-first.sh",
        "20-second.sh",
    ]


def test_hook_that_is_not_executable_is_refused(bp_root: Path) -> None:
    folder = write_blueprint(bp_root, MINIMAL)
    (folder / "hooks" / "post").mkdir(parents=True)
    (folder / "hooks" / "post" / "run.sh").write_text("#!/bin/sh\n")
    with pytest.raises(BlueprintError, match="hooks/post/run.sh is not executable"):
        load_blueprint("tiny")


def test_hook_symlink_leaving_the_blueprint_is_refused(bp_root: Path, tmp_path: Path) -> None:
    folder = write_blueprint(bp_root, MINIMAL)
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\n")
    outside.chmod(0o755)
    (folder / "hooks" / "pre").mkdir(parents=True)
    os.symlink(outside, folder / "hooks" / "pre" / "evil.sh")
    with pytest.raises(BlueprintError, match="leaves the blueprint folder"):
        load_blueprint("tiny")


def test_unknown_builtin_hook_is_refused(bp_root: Path) -> None:
    write_blueprint(bp_root, {**MINIMAL, "hooks": {"pre": ["aws.delete_everything"]}})
    with pytest.raises(BlueprintError, match="unknown built-in hook 'aws.delete_everything'"):
        load_blueprint("tiny")


LOGICAL_DB = {"service": "orders", "driver": "postgres_logical", "source": "P", "target": "C"}
RDS_SOURCE = {"account_id": "111111111111", "region": "us-east-1", "instance": "orders-prod"}
RDS_DB = {"service": "orders", "driver": "aws_rds_snapshot", "source": RDS_SOURCE}


def test_well_formed_database_entries_load(bp_root: Path) -> None:
    write_blueprint(
        bp_root,
        {
            **MINIMAL,
            "databases": [LOGICAL_DB | {"dns": "orders-db"}, RDS_DB | {"service": "billing"}],
        },
    )
    assert [db["service"] for db in load_blueprint("tiny").databases] == ["orders", "billing"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"approval": {"plan": "sometimes"}}, "approval.plan must be one of"),
        ({"approval": {"timeout_hours": -1}}, "approval.timeout_hours must be a positive"),
        ({"policy": {"prod": {}}}, "policy for unknown purpose 'prod'"),
        ({"policy": {"qa": {"max_ttl_days": 0}}}, "policy.qa.max_ttl_days must be a positive"),
        (
            {"policy": {"qa": {"default_ttl_days": 9, "max_ttl_days": 3}}},
            "default_ttl_days is above max_ttl_days",
        ),
        ({"databases": [{"service": "x", "driver": "ftp"}]}, "databases[0].driver must be"),
        (
            {"databases": [{"service": "x", "driver": "postgres_logical", "scrub_sql": ["../x"]}]},
            "leaves the blueprint",
        ),
        # Names match whole strings: a trailing newline passes a Python "^...$".
        ({"databases": [{"service": "orders\n", "driver": "ftp"}]}, "service must be a service"),
        (
            {"databases": [LOGICAL_DB | {"source": "PROD_ORDERS\n"}]},
            "databases[0].source must name a connection",
        ),
        ({"databases": [LOGICAL_DB | {"dns": "orders-db\n"}]}, "databases[0].dns must be a DNS"),
        (
            {"databases": [RDS_DB | {"source": RDS_SOURCE | {"account_id": "111111111111\n"}}]},
            "account_id must be 12 digits",
        ),
        (
            {"databases": [RDS_DB | {"source": RDS_SOURCE | {"account_id": "\u0661" * 12}}]},
            "account_id must be 12 digits",
        ),
        (
            {"databases": [RDS_DB | {"source": RDS_SOURCE | {"region": "us-east-1\n"}}]},
            "region must be an AWS region",
        ),
        (
            {"databases": [RDS_DB | {"source": RDS_SOURCE | {"instance": "orders-prod\n"}}]},
            "instance must be an RDS instance identifier",
        ),
        ({"databases": [RDS_DB | {"database_name": "app\n"}]}, "database_name must be a database"),
        ({"databases": [RDS_DB | {"target_region": "eu-west-1\n"}]}, "target_region must be"),
    ],
)
def test_bad_sections_are_refused(bp_root: Path, section: dict, message: str) -> None:
    write_blueprint(bp_root, {**MINIMAL, **section})
    with pytest.raises(BlueprintError) as error:
        load_blueprint("tiny")
    assert message in str(error.value)
    assert str(error.value).startswith("blueprint tiny")


# --- the parsed-blueprint cache ------------------------------------------------------------


def settle(*paths: Path) -> None:
    """Date files back, as files that were not just written: the cache trusts only those."""
    past = os.stat(paths[0]).st_mtime - 60
    for path in paths:
        os.utime(path, (past, past))


def test_a_loaded_blueprint_is_kept_until_its_file_changes(bp_root: Path) -> None:
    folder = write_blueprint(bp_root, MINIMAL)
    settle(folder / "blueprint.yaml")
    first = load_blueprint("tiny")
    assert load_blueprint("tiny") is first  # not read and checked again

    (folder / "blueprint.yaml").write_text(yaml.safe_dump({**MINIMAL, "title": "Changed"}))
    changed = load_blueprint("tiny")
    assert changed.title == "Changed"
    # Same size, same second: still seen (the file is too fresh to be trusted).
    (folder / "blueprint.yaml").write_text(yaml.safe_dump({**MINIMAL, "title": "Chanced"}))
    assert load_blueprint("tiny").title == "Chanced"


def test_a_blueprint_made_invalid_is_refused_at_once(bp_root: Path) -> None:
    folder = write_blueprint(bp_root, MINIMAL)
    settle(folder / "blueprint.yaml")
    load_blueprint("tiny")
    (folder / "blueprint.yaml").write_text(yaml.safe_dump({**MINIMAL, "stages": ["nope"]}))
    with pytest.raises(BlueprintError, match="unknown stage kind 'nope'"):
        load_blueprint("tiny")


def test_a_hook_added_removed_or_made_unexecutable_is_seen(bp_root: Path) -> None:
    folder = write_blueprint(bp_root, MINIMAL)
    hooks = folder / "hooks" / "pre"
    hooks.mkdir(parents=True)
    settle(folder / "blueprint.yaml", hooks)
    assert load_blueprint("tiny").hooks.pre_scripts == ()

    (hooks / "10-first.sh").write_text("#!/bin/sh\n")
    (hooks / "10-first.sh").chmod(0o755)
    settle(folder / "blueprint.yaml", hooks, hooks / "10-first.sh")
    assert [p.name for p in load_blueprint("tiny").hooks.pre_scripts] == ["10-first.sh"]

    (hooks / "10-first.sh").chmod(0o644)
    with pytest.raises(BlueprintError, match="is not executable"):
        load_blueprint("tiny")
    (hooks / "10-first.sh").unlink()
    settle(folder / "blueprint.yaml", hooks)
    assert load_blueprint("tiny").hooks.pre_scripts == ()


def test_each_blueprints_folder_has_its_own_blueprints(tmp_path: Path, settings) -> None:
    for root, title in ((tmp_path / "a", "From A"), (tmp_path / "b", "From B")):
        folder = write_blueprint(root, {**MINIMAL, "title": title})
        settle(folder / "blueprint.yaml")
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path / "a"
    assert load_blueprint("tiny").title == "From A"
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path / "b"
    assert load_blueprint("tiny").title == "From B"
