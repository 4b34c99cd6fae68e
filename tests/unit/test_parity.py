"""The pure comparison of a clone with production: configs, resources, versions, data age."""

from __future__ import annotations

from pipelines.parity import (
    SHOWN_SENSITIVE,
    CheckStatus,
    compare,
    digest,
    in_parity,
    resources_from_module,
    without_instance_key,
)
from pipelines.parity_rules import Parity, PurposeParity, ResourceRule

PROD = {"dns_zone": "prod.internal", "size": "large", "cidr": "10.0.0.0/16", "net": {"a": 1}}


def resource(address: str, **values: object) -> dict:
    return {"address": address, "type": address.split(".")[-2], "values": values}


PROD_RESOURCES = [
    resource("terraform_data.dns_zone", input={"name": "prod.internal"}),
    resource('terraform_data.database["orders"]', input={"instance_class": "db.r6g.large"}),
    resource("terraform_data.network", input={"cidr": "10.0.0.0/16"}),
]


def run(rules: PurposeParity, **overrides: object) -> list:
    parity = Parity(
        production="prod",
        purposes={"qa": rules},
        allowed_differences={"cidr": "own network range"},
    )
    given: dict = {
        "clone_config": PROD | {"cidr": "10.9.0.0/16"},
        "production_config": PROD,
        "clone_resources": PROD_RESOURCES,
        "production_resources": PROD_RESOURCES,
        "clone_version": "1.0.0",
        "production_version": "1.0.0",
        "data_age_hours": 2.0,
    }
    return compare(parity=parity, purpose="qa", **(given | overrides))


def by_path(checks: list) -> dict:
    return {check.path: check for check in checks}


def test_equal_paths_compare_whole_values_and_allowed_differences_carry_their_reason() -> None:
    checks = run(PurposeParity(equal=("dns_zone", "net")), clone_config=PROD | {"net": {"a": 2}})
    found = by_path(checks)
    assert found["dns_zone"].status == CheckStatus.EQUAL
    assert (found["net"].status, found["net"].clone, found["net"].production) == (
        CheckStatus.DIFFERS,
        {"a": 2},
        {"a": 1},
    )
    # The clone's cidr is the production's here: an allowed difference that is equal.
    assert found["cidr"].status == CheckStatus.EQUAL
    assert not in_parity(checks)
    assert found["net"].line() == 'differs net: clone={"a":2} production={"a":1}'


def test_an_allowed_difference_keeps_the_report_in_parity() -> None:
    checks = run(PurposeParity(equal=("dns_zone",)))
    cidr = by_path(checks)["cidr"]
    assert (cidr.status, cidr.reason, cidr.rule) == (
        CheckStatus.ALLOWED,
        "own network range",
        "allowed_difference",
    )
    assert cidr.line() == "allowed cidr: clone=10.9.0.0/16 production=10.0.0.0/16"
    assert in_parity(checks)


def test_a_missing_resource_address_or_type_differs() -> None:
    clone = [r for r in PROD_RESOURCES if r["address"] != "terraform_data.dns_zone"]
    checks = by_path(run(PurposeParity(resources=ResourceRule.ADDRESSES), clone_resources=clone))
    missing = checks["resource terraform_data.dns_zone"]
    assert (missing.status, missing.clone, missing.production) == (
        CheckStatus.DIFFERS,
        "missing",
        "present",
    )
    assert checks['resource terraform_data.database["orders"]'].status == CheckStatus.EQUAL

    other = [resource("null_resource.x")]
    checks = by_path(run(PurposeParity(resources=ResourceRule.TYPES), clone_resources=other))
    assert set(checks) == {"resource terraform_data", "cidr"}
    assert checks["resource terraform_data"].status == CheckStatus.DIFFERS


def test_resource_attributes_are_compared_instance_by_instance() -> None:
    attributes = {"terraform_data.database": ("input.instance_class",)}
    rules = PurposeParity(resource_attributes=attributes)
    smaller = [
        resource('terraform_data.database["orders"]', input={"instance_class": "db.t4g.micro"})
    ]
    checks = by_path(run(rules, clone_resources=smaller))
    check = checks['resource terraform_data.database["orders"].input.instance_class']
    assert (check.status, check.clone, check.production) == (
        CheckStatus.DIFFERS,
        "db.t4g.micro",
        "db.r6g.large",
    )
    checks = by_path(run(rules, clone_resources=[]))
    assert checks['resource terraform_data.database["orders"].input.instance_class'].clone == (
        "missing"
    )
    assert in_parity(run(rules))


def test_sensitive_values_compare_by_digest_and_show_as_sensitive() -> None:
    rules = PurposeParity(resource_attributes={"terraform_data.db": ("input.password",)})
    prod = [resource("terraform_data.db", input={"password": digest("s3cret")})]
    same = run(rules, production_resources=prod, clone_resources=prod)
    other = [resource("terraform_data.db", input={"password": digest("other")})]
    differs = run(rules, production_resources=prod, clone_resources=other)
    assert in_parity(same) and not in_parity(differs)
    check = by_path(differs)["resource terraform_data.db.input.password"]
    assert (check.clone, check.production) == (SHOWN_SENSITIVE, SHOWN_SENSITIVE)
    assert "s3cret" not in repr(differs) and digest("s3cret")["sensitive_sha256"] not in repr(
        [c.as_dict() for c in differs]
    )


def test_blueprint_version_and_data_age() -> None:
    rules = PurposeParity(same_blueprint_version=True, max_data_age_hours=168)
    checks = by_path(run(rules, clone_version="0.9.0", data_age_hours=200.5))
    version, age = checks["blueprint_version"], checks["data_age_hours"]
    assert (version.status, version.clone, version.production) == (
        CheckStatus.DIFFERS,
        "0.9.0",
        "1.0.0",
    )
    assert (age.status, age.clone) == (CheckStatus.DIFFERS, 200.5)
    assert age.line() == "differs data_age_hours: clone=200.5 production=0"
    assert in_parity(run(rules))
    # No data at all is not fresh data.
    assert by_path(run(rules, data_age_hours=None))["data_age_hours"].status == "differs"


def test_resources_are_read_from_every_module_with_sensitive_values_digested() -> None:
    module = {
        "resources": [
            {
                "address": "terraform_data.a",
                "mode": "managed",
                "type": "terraform_data",
                "values": {"input": {"token": "abc", "list": ["x", "y"]}},
                "sensitive_values": {"input": {"token": True, "list": [False, True]}},
            },
            {"address": "data.x.y", "mode": "data", "type": "x", "values": {}},
        ],
        "child_modules": [
            {
                "resources": [
                    {"address": "module.m.terraform_data.b", "type": "terraform_data"},
                ],
                "child_modules": [
                    {
                        "resources": [
                            {
                                "address": "module.m.module.n.null_resource.c",
                                "type": "null_resource",
                                "values": {"id": "1"},
                            }
                        ]
                    }
                ],
            }
        ],
    }
    found = resources_from_module(module)
    assert [r["address"] for r in found] == [
        "module.m.module.n.null_resource.c",
        "module.m.terraform_data.b",
        "terraform_data.a",
    ]
    values = found[2]["values"]["input"]
    assert values["token"] == digest("abc")
    assert values["list"] == ["x", digest("y")]
    assert resources_from_module(None) == []


def test_instance_keys_are_stripped_from_the_end_only() -> None:
    assert without_instance_key('terraform_data.database["orders"]') == "terraform_data.database"
    assert without_instance_key("aws_instance.web[0]") == "aws_instance.web"
    assert without_instance_key('module.a["x"].aws_vpc.main') == 'module.a["x"].aws_vpc.main'
