"""Parity rules in blueprint.yaml: parsed into dataclasses, bad rules refused at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.blueprints import BlueprintError, load_blueprint
from pipelines.parity_rules import Enforce, ResourceRule
from tests.unit.test_blueprints import MINIMAL, write_blueprint

RULES = {
    "production": "prod",
    "purposes": {
        "qa": {"equal": ["size", "services"], "resources": "addresses", "enforce": "warn"},
        "loadtest": {
            "equal": ["size"],
            "resource_attributes": {"terraform_data.database": ["input.instance_class"]},
        },
        "demo": {
            "same_blueprint_version": True,
            "max_data_age_hours": 168,
            "follow_production": True,
        },
    },
    "allowed_differences": {"label": "each account has its own label"},
}
SPEC = {
    **MINIMAL,
    "parameters": {
        **MINIMAL["parameters"],
        "properties": {
            **MINIMAL["parameters"]["properties"],
            "label": {"type": "string"},
            "network": {"type": "object", "properties": {"cidr": {"type": "string"}}},
        },
    },
}


@pytest.fixture
def bp_root(tmp_path: Path, settings) -> Path:
    settings.PORTAL_BLUEPRINTS_DIR = tmp_path
    return tmp_path


def test_rules_are_parsed_per_purpose(bp_root: Path) -> None:
    write_blueprint(bp_root, {**SPEC, "parity": RULES})
    parity = load_blueprint("tiny").parity
    assert parity is not None
    assert parity.production == "prod"
    qa = parity.rules_for("qa")
    assert (qa.equal, qa.resources, qa.enforce) == (
        ("size", "services"),
        ResourceRule.ADDRESSES,
        Enforce.WARN,
    )
    loadtest = parity.rules_for("loadtest")
    assert loadtest.enforce == Enforce.REFUSE  # the default
    assert dict(loadtest.resource_attributes) == {
        "terraform_data.database": ("input.instance_class",)
    }
    demo = parity.rules_for("demo")
    assert (demo.same_blueprint_version, demo.max_data_age_hours, demo.follow_production) == (
        True,
        168.0,
        True,
    )
    assert dict(parity.allowed_differences) == {"label": "each account has its own label"}
    assert parity.rules_for("standby").equal == ()


def test_a_blueprint_without_rules_has_none(bp_root: Path) -> None:
    write_blueprint(bp_root, SPEC)
    assert load_blueprint("tiny").parity is None


def test_a_nested_config_path_is_known_through_properties(bp_root: Path) -> None:
    rules = {"production": "prod", "purposes": {"qa": {"equal": ["network.cidr"]}}}
    write_blueprint(bp_root, {**SPEC, "parity": rules})
    parity = load_blueprint("tiny").parity
    assert parity is not None and parity.rules_for("qa").equal == ("network.cidr",)


@pytest.mark.parametrize(
    ("parity", "message"),
    [
        ({"purposes": {}}, "parity.production must name the production account"),
        (
            {"production": "prod", "purposes": {"qa": {"equal": ["dns_zone"]}}},
            "parity.purposes.qa.equal: config path 'dns_zone' is not a parameter",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"equal": ["network.vpc"]}}},
            "config path 'network.vpc' is not a parameter",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"equal": ["services.name"]}}},
            "config path 'services.name' is not a parameter",
        ),
        (
            {"production": "prod", "purposes": {"staging": {"equal": ["size"]}}},
            "parity.purposes.staging: the blueprint has no purpose 'staging'",
        ),
        (
            {"production": "prod", "allowed_differences": {"cidr": "own range"}},
            "parity.allowed_differences: config path 'cidr' is not a parameter",
        ),
        (
            {"production": "prod", "allowed_differences": {"label": ""}},
            "give the reason it may differ",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"resources": "everything"}}},
            "parity.purposes.qa.resources must be addresses or types",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"enforce": "maybe"}}},
            "parity.purposes.qa.enforce must be refuse or warn",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"max_data_age_hours": -1}}},
            "max_data_age_hours must be a positive number",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"follow_production": "yes"}}},
            "follow_production must be true or false",
        ),
        (
            {
                "production": "prod",
                "purposes": {"qa": {"resource_attributes": {'terraform_data.db["a"]': ["x"]}}},
            },
            "is not a resource address without instance key",
        ),
        (
            {
                "production": "prod",
                "purposes": {"qa": {"resource_attributes": {"terraform_data.db": []}}},
            },
            "must be a list of attribute paths",
        ),
        (
            {"production": "prod", "purposes": {"qa": {"equals": ["size"]}}},
            "parity.purposes.qa: unknown setting(s) equals",
        ),
        (
            {
                "production": "prod",
                "purposes": {"qa": {"equal": ["label"]}},
                "allowed_differences": {"label": "own label"},
            },
            "'label' is also an allowed difference",
        ),
        ({"production": "prod\n"}, "parity.production must name the production account"),
    ],
)
def test_bad_rules_are_refused_at_load_naming_blueprint_and_path(
    bp_root: Path, parity: dict, message: str
) -> None:
    write_blueprint(bp_root, {**SPEC, "parity": parity})
    with pytest.raises(BlueprintError) as error:
        load_blueprint("tiny")
    assert message in str(error.value)
    assert str(error.value).startswith("blueprint tiny: ")


def test_a_purpose_the_policy_leaves_out_is_refused(bp_root: Path) -> None:
    policy = {"qa": {"auto_approve": ["admins"]}}
    parity = {"production": "prod", "purposes": {"demo": {"same_blueprint_version": True}}}
    write_blueprint(bp_root, {**SPEC, "policy": policy, "parity": parity})
    with pytest.raises(BlueprintError, match="the blueprint has no purpose 'demo'"):
        load_blueprint("tiny")


def test_the_shipped_sandbox_declares_rules_for_qa_loadtest_and_demo(settings) -> None:
    settings.PORTAL_BLUEPRINTS_DIR = Path(__file__).resolve().parents[2] / "blueprints"
    parity = load_blueprint("sandbox").parity
    assert parity is not None and parity.production == "prod"
    assert set(parity.purposes) == {"qa", "loadtest", "demo"}
    assert "dns_zone" in parity.rules_for("qa").equal
    assert "cidr" in parity.allowed_differences
