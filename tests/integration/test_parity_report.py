"""`account_parity`: text, --json and exit codes, on clones in and out of parity."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts_app.models import Account, AccountStatus, ParityReport, Purpose
from pipelines.models import RunKind, RunStatus, StageStatus
from pipelines.parity import digest
from tests.conftest import run_command
from tests.factories import AccountFactory, PipelineRunFactory, StageRunFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

PROD_CONFIG = {
    "cidr": "10.0.0.0/16",
    "dns_zone": "prod.internal",
    "instance_size": "large",
    "services": [{"name": "web", "database": False}, {"name": "orders", "database": True}],
}
REPORT_KEYS = {
    "account",
    "production",
    "purpose",
    "in_parity",
    "checks",
    "data_age_hours",
    "blueprint_version",
    "checked_at",
}


def resources(*, instance_class: str = "db.r6g.large", zone: bool = True) -> list[dict]:
    found = [
        {"address": "terraform_data.account", "type": "terraform_data", "values": {}},
        {
            "address": 'terraform_data.database["orders"]',
            "type": "terraform_data",
            "values": {"input": {"instance_class": instance_class, "token": digest("t")}},
        },
        {"address": "terraform_data.network", "type": "terraform_data", "values": {}},
    ]
    if zone:
        found.append({"address": "terraform_data.dns_zone", "type": "terraform_data", "values": {}})
    return found


def production_account() -> Account:
    """Production of the sandbox blueprint: ready, registered at 1.0.0, its resources known."""
    return AccountFactory(
        name="prod",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
        config=PROD_CONFIG,
        resources=resources(),
        registered_version="1.0.0",
    )


@pytest.fixture
def production() -> Account:
    return production_account()


def clone(*, name: str, purpose: str, version: str = "1.0.0", **fields: object):
    config = {**PROD_CONFIG, "cidr": "10.30.0.0/16"}
    config.update(fields.pop("config", {}))
    account = AccountFactory(
        name=name,
        purpose=purpose,
        status=AccountStatus.READY,
        config=config,
        resources=fields.pop("resources", resources()),
        **fields,
    )
    PipelineRunFactory(
        account=account,
        kind=RunKind.PROVISION,
        status=RunStatus.SUCCEEDED,
        blueprint_version=version,
        finished_at=timezone.now(),
    )
    return account


def with_data(account, *, hours_ago: float) -> None:
    """A refresh run whose db_clone made the account's orders database, hours ago."""
    taken = timezone.now() - timedelta(hours=hours_ago)
    run = PipelineRunFactory(
        account=account, kind=RunKind.REFRESH_DATA, status=RunStatus.SUCCEEDED, finished_at=taken
    )
    StageRunFactory(
        run=run, position=0, kind="db_clone", status=StageStatus.SUCCEEDED, finished_at=taken
    )
    account.endpoints = {"orders": {"driver": "postgres_logical", "run_id": run.pk}}
    account.save(update_fields=["endpoints"])


def parity(name: str, *flags: str) -> tuple[int, str, str]:
    return run_command("account_parity", name, *flags)


def test_a_qa_clone_in_parity(production) -> None:
    clone(name="qa-ok", purpose=Purpose.QA)
    code, out, err = parity("qa-ok")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert "equal dns_zone: clone=prod.internal production=prod.internal" in lines
    assert (
        'equal services: clone=[{"database":false,"name":"web"},{"database":true,"name":"orders"}]'
        ' production=[{"database":false,"name":"web"},{"database":true,"name":"orders"}]'
    ) in lines
    assert "equal resource terraform_data.dns_zone: clone=present production=present" in lines
    assert "allowed cidr: clone=10.30.0.0/16 production=10.0.0.0/16" in lines
    assert lines[-1].startswith("qa-ok against prod (qa): in parity;")
    assert "cidr allowed: each account has its own network range" in lines[-1]
    assert ParityReport.objects.get().in_parity is True

    code, out, _ = parity("qa-ok", "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) == REPORT_KEYS
    assert (report["account"], report["production"], report["purpose"]) == ("qa-ok", "prod", "qa")
    assert report["in_parity"] is True
    assert report["blueprint_version"] == {"clone": "1.0.0", "production": "1.0.0"}
    assert report["data_age_hours"] is None
    for check in report["checks"]:
        assert set(check) == {"path", "status", "clone", "production", "rule", "reason"}
    cidr = next(c for c in report["checks"] if c["path"] == "cidr")
    assert (cidr["status"], cidr["reason"]) == ("allowed", "each account has its own network range")
    assert ParityReport.objects.count() == 2


def test_a_qa_clone_out_of_parity_by_config(production) -> None:
    clone(name="qa-zone", purpose=Purpose.QA, config={"dns_zone": "qa.internal"})
    code, out, _ = parity("qa-zone")
    assert code == 1
    assert "differs dns_zone: clone=qa.internal production=prod.internal" in out.splitlines()
    assert "out of parity, 1 differ" in out.splitlines()[-1]
    code, out, _ = parity("qa-zone", "--json")
    report = json.loads(out)
    assert code == 1 and report["in_parity"] is False
    zone = next(c for c in report["checks"] if c["path"] == "dns_zone")
    assert zone == {
        "path": "dns_zone",
        "status": "differs",
        "clone": "qa.internal",
        "production": "prod.internal",
        "rule": "equal",
        "reason": "",
    }
    assert ParityReport.objects.filter(in_parity=False).count() == 2


def test_a_qa_clone_out_of_parity_by_resources(production) -> None:
    clone(name="qa-nozone", purpose=Purpose.QA, resources=resources(zone=False))
    code, out, _ = parity("qa-nozone")
    assert code == 1
    assert "differs resource terraform_data.dns_zone: clone=missing production=present" in out


def test_a_loadtest_on_a_smaller_database_class(production) -> None:
    clone(name="lt-small", purpose=Purpose.LOADTEST,
          resources=resources(instance_class="db.t4g.micro"))  # fmt: skip
    code, out, _ = parity("lt-small")
    assert code == 1
    assert (
        'differs resource terraform_data.database["orders"].input.instance_class: '
        "clone=db.t4g.micro production=db.r6g.large"
    ) in out.splitlines()
    assert "equal instance_size: clone=large production=large" in out.splitlines()


def test_a_demo_out_of_parity_by_data_age_then_in_parity_with_fresh_data(production) -> None:
    demo = clone(name="demo-old", purpose=Purpose.DEMO)
    code, out, _ = parity("demo-old", "--json")
    assert code == 1  # no data at all
    assert json.loads(out)["data_age_hours"] is None
    with_data(demo, hours_ago=200)
    code, out, _ = parity("demo-old", "--json")
    report = json.loads(out)
    assert code == 1
    assert 199.9 <= report["data_age_hours"] <= 200.1
    age = next(c for c in report["checks"] if c["path"] == "data_age_hours")
    assert age["status"] == "differs" and age["rule"] == "max_data_age_hours 168"
    with_data(demo, hours_ago=3)
    code, out, _ = parity("demo-old")
    assert code == 0, out
    assert "equal data_age_hours: clone=3.0 production=0" in out.splitlines()


def test_a_demo_out_of_parity_by_blueprint_version(production) -> None:
    demo = clone(name="demo-stale", purpose=Purpose.DEMO, version="0.9.0")
    with_data(demo, hours_ago=1)
    code, out, _ = parity("demo-stale")
    assert code == 1
    assert "differs blueprint_version: clone=0.9.0 production=1.0.0" in out.splitlines()


def test_sensitive_values_never_appear(production) -> None:
    production.resources = [
        {
            "address": 'terraform_data.database["orders"]',
            "type": "terraform_data",
            "values": {"input": {"instance_class": digest("db.r6g.large")}},
        }
    ]
    production.save(update_fields=["resources"])
    clone(name="lt-secret", purpose=Purpose.LOADTEST, resources=[
        {"address": 'terraform_data.database["orders"]', "type": "terraform_data",
         "values": {"input": {"instance_class": digest("db.r6g.large")}}},
    ])  # fmt: skip
    code, out, _ = parity("lt-secret", "--json")
    assert code == 0
    assert digest("db.r6g.large")["sensitive_sha256"] not in out
    check = next(c for c in json.loads(out)["checks"] if "instance_class" in c["path"])
    assert (check["clone"], check["production"]) == ("(sensitive)", "(sensitive)")


def test_bad_input_exits_2() -> None:
    assert parity("nobody")[0] == 2
    clone(name="qa-alone", purpose=Purpose.QA)
    code, _, err = parity("qa-alone")
    assert code == 2
    assert "production account 'prod' of blueprint sandbox is not registered" in err
    AccountFactory(name="prod", purpose=Purpose.PRODUCTION, config=PROD_CONFIG)
    code, _, err = parity("prod")
    assert code == 2 and "is production: it is the reference" in err
    other = AccountFactory(name="ro-one", blueprint="render-only", config={})
    code, _, err = parity(other.name)
    assert code == 2 and "has no parity rules" in err
    assert ParityReport.objects.count() == 0
