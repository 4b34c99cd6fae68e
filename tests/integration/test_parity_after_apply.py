"""Apply records the clone's resources, so a real clone is compared with production."""

from __future__ import annotations

import json
import uuid

import pytest

from accounts_app.models import AccountStatus, Purpose
from pipelines import services
from pipelines.models import RunStatus
from tests.conftest import run_command
from tests.factories import AccountFactory
from tests.integration.test_parity_report import PROD_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_provisioned_loadtest_clone_on_smaller_servers_is_out_of_parity(
    celery_worker, wait_for_run
) -> None:
    name = f"lt-{uuid.uuid4().hex[:8]}"
    config = {**PROD_CONFIG, "cidr": "10.50.0.0/16", "instance_size": "small"}
    # The shipped sandbox's Terraform and parity rules, without its database (no source here).
    account = AccountFactory(
        name=name, blueprint="sandbox-infra", purpose=Purpose.LOADTEST, config=config
    )
    run = wait_for_run(services.start_run(account, "provision").pk, timeout=180)
    assert run.status == RunStatus.SUCCEEDED, run.explanation

    account.refresh_from_db()
    by_address = {r["address"]: r for r in account.resources}
    expected = {"terraform_data.dns_zone", 'terraform_data.service["web"]'}
    assert expected < set(by_address)
    database = by_address['terraform_data.database["orders"]']
    assert database["type"] == "terraform_data"
    assert database["values"]["input"]["instance_class"] == "db.t4g.micro"

    production_resources = json.loads(json.dumps(account.resources))
    for resource in production_resources:
        if resource["address"] == 'terraform_data.database["orders"]':
            resource["values"]["input"]["instance_class"] = "db.r6g.large"
    AccountFactory(
        name="prod",
        purpose=Purpose.PRODUCTION,
        status=AccountStatus.READY,
        config={**PROD_CONFIG, "instance_size": "small"},
        resources=production_resources,
        registered_version="1.0.0",
    )
    code, out, _ = run_command("account_parity", name)
    assert code == 1, out
    assert (
        'differs resource terraform_data.database["orders"].input.instance_class: '
        "clone=db.t4g.micro production=db.r6g.large"
    ) in out.splitlines()
    assert "equal instance_size: clone=small production=small" in out.splitlines()
