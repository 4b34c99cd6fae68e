"""The form generated from a blueprint's JSON Schema: fields, parsing, errors per field."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import QueryDict

from accounts_app.field_words import pattern_in_words
from accounts_app.forms import (
    ArrayGroup,
    ScalarField,
    SchemaForm,
    child_path,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["account_name", "cidr"],
    "properties": {
        "account_name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{2,39}$"},
        "cidr": {
            "type": "string",
            "title": "Network CIDR",
            "description": "The account's IPv4 range.",
            "pattern": r"^([0-9]{1,3}\.){3}[0-9]{1,3}/([89]|[12][0-9]|3[0-2])$",
            "default": "10.20.0.0/16",
        },
        "instance_size": {
            "type": "string",
            "enum": ["small", "medium", "large"],
            "default": "small",
        },
        "replicas": {"type": "integer", "title": "Replicas", "minimum": 1, "maximum": 5},
        "cpu_ratio": {"type": "number", "maximum": 1.5},
        "monitoring": {"type": "boolean", "default": True},
        "tags": {"type": "array", "items": {"type": "string"}},
        "services": {
            "type": "array",
            "title": "Services",
            "maxItems": 3,
            "default": [{"name": "web", "database": False}],
            "items": {
                "type": "object",
                "title": "Service",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "title": "Service name", "pattern": "^[a-z]+$"},
                    "database": {"type": "boolean", "title": "Has a database", "default": False},
                    "tier": {"type": "string", "enum": ["gold", "silver"]},
                },
            },
        },
    },
}


def post(**values: str | list[str]) -> QueryDict:
    data = QueryDict(mutable=True)
    for key, value in values.items():
        name = key.replace("__", ".")
        if isinstance(value, list):
            data.setlist(name, value)
        else:
            data[name] = value
    return data


def by_name(form: SchemaForm) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node in form.nodes:
        for sub in node.walk():
            nodes[sub.name] = sub
    return nodes


def valid_post(**overrides: str) -> QueryDict:
    values: dict[str, str] = {
        "c__cidr": "10.1.0.0/16",
        "c__instance_size": "medium",
        "c__replicas": "2",
        "c__cpu_ratio": "0.5",
        "c__monitoring": "on",
        "c__tags": "blue\n\ngreen\n",
        "c__services__rows": "3",
        "c__services__0__name": "web",
        "c__services__1__name": "",  # a blank row: dropped
        "c__services__2__name": "orders",
        "c__services__2__database": "on",
        "c__services__2__tier": "gold",
    }
    values.update(overrides)
    return post(**values)


def test_an_unbound_form_shows_every_kind_of_field_with_defaults() -> None:
    form = SchemaForm(SCHEMA, exclude=("account_name",))
    nodes = by_name(form)

    assert "c.account_name" not in nodes
    cidr = nodes["c.cidr"]
    assert isinstance(cidr, ScalarField)
    assert (cidr.label, cidr.help, cidr.value, cidr.required) == (
        "Network CIDR",
        "The account's IPv4 range.",
        "10.20.0.0/16",
        True,
    )
    size = nodes["c.instance_size"]
    assert size.widget == "select" and size.value == "small"
    assert [value for value, _ in size.choices] == ["", "small", "medium", "large"]
    replicas = nodes["c.replicas"]
    assert replicas.widget == "number" and replicas.attrs == {"step": "1", "min": "1", "max": "5"}
    assert nodes["c.monitoring"].widget == "checkbox" and nodes["c.monitoring"].checked
    assert nodes["c.tags"].widget == "lines"
    services = nodes["c.services"]
    assert isinstance(services, ArrayGroup)
    # The default service, plus one blank row to fill in.
    assert len(services.rows) == 2
    assert nodes["c.services.0.name"].value == "web"
    assert nodes["c.services.1.name"].value == ""
    assert services.item_label == "Service"


def test_initial_values_fill_the_form() -> None:
    initial = {"cidr": "10.9.0.0/16", "services": [{"name": "a"}, {"name": "b", "database": True}]}

    nodes = by_name(SchemaForm(SCHEMA, initial=initial))

    assert nodes["c.cidr"].value == "10.9.0.0/16"
    assert nodes["c.services.1.name"].value == "b" and nodes["c.services.1.database"].checked
    assert len(nodes["c.services"].rows) == 3


def test_post_data_parses_into_a_typed_config() -> None:
    form = SchemaForm(SCHEMA, data=valid_post(), exclude=("account_name",))

    assert form.is_valid(extra={"account_name": "acme-demo"}), [
        (n.path, n.errors) for n in form.field_errors()
    ]
    assert form.config == {
        "account_name": "acme-demo",
        "cidr": "10.1.0.0/16",
        "instance_size": "medium",
        "replicas": 2,
        "cpu_ratio": 0.5,
        "monitoring": True,
        "tags": ["blue", "green"],
        "services": [
            {"name": "web", "database": False},
            {"name": "orders", "database": True, "tier": "gold"},
        ],
    }


def test_an_unchecked_box_is_false_and_blank_optional_fields_are_left_out() -> None:
    form = SchemaForm(
        SCHEMA,
        data=valid_post(c__replicas="", c__cpu_ratio="", c__tags="", c__monitoring=""),
        exclude=("account_name",),
    )

    assert form.is_valid(extra={"account_name": "acme-demo"})
    assert form.config["monitoring"] is False
    assert "replicas" not in form.config and "cpu_ratio" not in form.config
    assert "tags" not in form.config


def test_each_error_is_attached_to_its_field_and_values_are_kept() -> None:
    data = valid_post(
        c__cidr="10.1.0.300/99",
        c__replicas="9",
        c__cpu_ratio="lots",
        c__services__2__name="Orders!",
    )
    form = SchemaForm(SCHEMA, data=data, exclude=("account_name",))

    assert not form.is_valid(extra={"account_name": "acme-demo"})
    nodes = by_name(form)
    # In words, never the regular expression: the description for a pattern with groups,
    # the pattern put in words for a simple one.
    assert nodes["c.cidr"].errors == ["Not in the expected format. The account's IPv4 range."]
    assert nodes["c.cidr"].value == "10.1.0.300/99"
    assert nodes["c.replicas"].errors == ["Must be at most 5."]
    assert nodes["c.cpu_ratio"].errors == ["Enter a number."]
    assert nodes["c.cpu_ratio"].value == "lots"
    # Row 3 is the second service in the config (the blank row 2 is dropped).
    assert nodes["c.services.2.name"].path == "$.services[1].name"
    assert nodes["c.services.2.name"].errors == [
        "Not in the expected format: one or more lower-case letters."
    ]
    assert not any("[a-z" in e or "^" in e for node in form.field_errors() for e in node.errors)
    assert nodes["c.services.0.name"].errors == []
    assert form.non_field_errors == []


def test_required_fields_are_reported_once_each() -> None:
    data = valid_post(c__cidr="", c__services__0__name="", c__services__0__tier="silver")
    form = SchemaForm(SCHEMA, data=data, exclude=("account_name",))

    assert not form.is_valid(extra={"account_name": "acme-demo"})
    nodes = by_name(form)
    assert nodes["c.cidr"].errors == ["This field is required."]
    # A row with a tier but no name is not blank: its name is required.
    assert nodes["c.services.0.name"].errors == ["This field is required."]


def test_minimum_is_checked_server_side() -> None:
    form = SchemaForm(SCHEMA, data=valid_post(c__replicas="0"), exclude=("account_name",))

    assert not form.is_valid(extra={"account_name": "acme-demo"})
    assert by_name(form)["c.replicas"].errors == ["Must be at least 1."]


def test_an_enum_outside_its_choices_is_refused() -> None:
    form = SchemaForm(SCHEMA, data=valid_post(c__instance_size="huge"), exclude=("account_name",))

    assert not form.is_valid(extra={"account_name": "acme-demo"})
    assert by_name(form)["c.instance_size"].errors == ["Select a valid choice."]


def test_add_another_adds_one_row_and_keeps_the_values() -> None:
    data = post(
        c__cidr="not a cidr",
        add_row="c.services",
        c__services__rows="2",
        c__services__0__name="web",
        c__services__1__name="api",
        c__services__1__database="on",
    )
    form = SchemaForm(SCHEMA, data=data, exclude=("account_name",))

    assert form.added_row
    nodes = by_name(form)
    assert len(nodes["c.services"].rows) == 3
    assert [nodes[f"c.services.{i}.name"].value for i in range(3)] == ["web", "api", ""]
    assert nodes["c.services.1.database"].checked
    assert nodes["c.cidr"].value == "not a cidr"
    assert nodes["c.cidr"].errors == []  # no errors shown for an "add a row" round trip


def test_rows_never_grow_past_max_items() -> None:
    data = valid_post(add_row="c.services", c__services__rows="3")
    services = by_name(SchemaForm(SCHEMA, data=data))["c.services"]

    assert len(services.rows) == 3 and not services.can_add


def test_errors_for_an_excluded_key_are_handed_back() -> None:
    form = SchemaForm(SCHEMA, data=valid_post(), exclude=("account_name",))

    assert not form.is_valid(extra={"account_name": "Bad Name"})
    assert form.excluded_errors["account_name"] and form.non_field_errors == []


def test_service_errors_by_json_path_land_on_the_right_field() -> None:
    form = SchemaForm(SCHEMA, data=valid_post(), exclude=("account_name",))
    assert form.is_valid(extra={"account_name": "acme-demo"})

    assert form.add_error("$.services[1].tier", "gold is sold out")
    assert not form.add_error("$.nothing_here", "odd")

    assert by_name(form)["c.services.2.tier"].errors == ["gold is sold out"]
    assert form.non_field_errors == ["$.nothing_here: odd"]


def test_an_error_on_an_unknown_child_goes_to_its_nearest_field() -> None:
    form = SchemaForm(SCHEMA, data=valid_post(), exclude=("account_name",))
    form.is_valid(extra={"account_name": "acme-demo"})

    assert form.add_error("$.services[0].extra", "no such property")

    assert by_name(form)["c.services"].errors == ["no such property"]


@pytest.mark.parametrize(
    ("parent", "key", "path"),
    [("$", "cidr", "$.cidr"), ("$.services", 2, "$.services[2]"), ("$", "a-b", "$['a-b']")],
)
def test_child_path_matches_jsonschema(parent: str, key: str | int, path: str) -> None:
    assert child_path(parent, key) == path


def test_the_sandbox_blueprint_schema_renders_and_parses(settings: Any) -> None:
    from pipelines.blueprints import load_blueprint

    sandbox = load_blueprint("sandbox")
    data = post(
        c__cidr="10.30.0.0/16",
        c__dns_zone="acme.internal",
        c__instance_size="small",
        c__services__rows="2",
        c__services__0__name="web",
        c__services__1__name="orders",
        c__services__1__database="on",
    )
    form = SchemaForm(sandbox.parameters, data=data)

    assert form.is_valid()
    assert sandbox.validate_config(form.config)["services"][1] == {
        "name": "orders",
        "database": True,
    }


def test_limits_and_patterns_are_shown_in_words_before_a_value_is_typed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{2,39}$", "maxLength": 40},
            "zone": {"type": "string", "maxLength": 253, "description": "A DNS zone."},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 5},
            "services": {
                "type": "array",
                "maxItems": 20,
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        },
    }
    nodes = by_name(SchemaForm(schema))
    assert nodes["c.name"].rules == (
        "A lower-case letter, then 2 to 39 lower-case letters, digits or dashes; "
        "at most 40 characters."
    )
    assert nodes["c.name"].attrs["maxlength"] == "40"
    assert nodes["c.zone"].rules == "At most 253 characters."
    assert nodes["c.replicas"].rules == "From 1 to 5."
    assert nodes["c.services"].rules == "At most 20 services."


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (
            "^[a-z][a-z0-9_]{1,30}$",
            "a lower-case letter, then 1 to 30 lower-case letters, digits or underscores",
        ),
        (r"^[0-9]{12}\Z", "12 digits"),
        ("^[A-Z][a-z]*$", "a capital letter, then any number of lower-case letters"),
        ("^[a-z0-9.-]{1,63}$", "1 to 63 lower-case letters, digits, dots or dashes"),
        ("^(a|b)$", None),  # groups and alternatives are not put in words
        (r"^\d+$", None),
    ],
)
def test_patterns_in_words(pattern: str, words: str | None) -> None:
    assert pattern_in_words(pattern) == words
