"""Run kind refresh-data on a provisioned sandbox-data account.

sandbox-data is the shipped sandbox blueprint plus db_clone and dns_cutover and
one postgres_logical database (tests/fixtures/blueprints/sandbox-data). The
account is provisioned through the full pipeline first (hooks, render, plan,
approval, apply with real Terraform, then the data stages); a refresh then
clones again and switches the endpoint, and the previous clone is gone.
"""

from __future__ import annotations

import pytest

from accounts_app.models import AccountStatus
from accounts_app.records import read_secret
from pipelines import services
from pipelines.clients import postgres as pg
from pipelines.dbclone.logical import clone_database_name, clone_role_name
from pipelines.models import RunKind, RunStatus, StageStatus
from tests.factories import SANDBOX_CONFIG, AccountFactory
from tests.integration.conftest import (
    ADMIN_URL,
    CloneSource,
    clone_databases,
    explain,
    unique_account_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROVISION = [
    "pre_hooks",
    "render",
    "plan",
    "approve_plan",
    "apply",
    "post_hooks",
    "db_clone",
    "dns_cutover",
]


def role_exists(role: str) -> bool:
    return bool(pg.fetch_all(ADMIN_URL, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))


def test_refresh_data_on_a_provisioned_sandbox_account(
    celery_worker, wait_for_run, clone_source: CloneSource
) -> None:
    name = unique_account_name()
    account = AccountFactory(
        name=name,
        blueprint="sandbox-data",
        config={**SANDBOX_CONFIG, "dns_zone": f"{name}.internal"},
    )
    provision = wait_for_run(services.start_run(account, RunKind.PROVISION).pk, timeout=240)
    assert provision.status == RunStatus.SUCCEEDED, explain(provision)
    assert [(s.kind, s.status) for s in provision.stages.all()] == [
        (kind, StageStatus.SUCCEEDED) for kind in PROVISION
    ]
    account.refresh_from_db()
    assert account.status == AccountStatus.READY
    assert "dns_zone" in account.outputs  # Terraform really applied
    first_db = clone_database_name(account=name, service="orders", run_id=provision.pk)
    assert account.endpoints["orders"]["database"] == first_db
    assert clone_databases(name) == [first_db]
    first_url = pg.with_dbname(ADMIN_URL, first_db)
    assert pg.fetch_all(first_url, "SELECT count(*) FROM users") == [(3000,)]

    refresh = wait_for_run(services.start_run(account, RunKind.REFRESH_DATA).pk, timeout=120)
    assert refresh.status == RunStatus.SUCCEEDED, explain(refresh)
    assert [s.kind for s in refresh.stages.all()] == ["db_clone", "dns_cutover"]
    account.refresh_from_db()
    assert account.status == AccountStatus.READY  # it kept serving throughout

    # The endpoint moved to the new clone; the previous clone database and role are gone.
    second_db = clone_database_name(account=name, service="orders", run_id=refresh.pk)
    endpoint = account.endpoints["orders"]
    assert (endpoint["database"], endpoint["role"]) == (second_db, clone_role_name(second_db))
    assert endpoint["run_id"] == refresh.pk and "previous" not in endpoint
    assert clone_databases(name) == [second_db]
    assert not role_exists(clone_role_name(first_db))
    assert role_exists(clone_role_name(second_db))
    assert read_secret(account_id=account.pk, name=f"db/orders/{first_db}") is None
    assert read_secret(account_id=account.pk, name=f"db/orders/{second_db}")
    # Until the cutover the first clone still served: db_clone saw it as the endpoint.
    clone = refresh.stages.get(kind="db_clone").outputs["services"]["orders"]
    assert clone["delete_after_cutover"]["previous"]["database"] == first_db
    cutover = refresh.stages.get(kind="dns_cutover").outputs["services"]["orders"]
    assert cutover["deleted"] == [f"database {first_db} on 127.0.0.1:5432"]
    # Fresh data from the source, masked, scrubbed.
    second_url = pg.with_dbname(ADMIN_URL, second_db)
    assert pg.fetch_all(second_url, "SELECT count(*) FROM users") == [(3000,)]
    assert pg.fetch_all(
        second_url, "SELECT count(*) FROM users WHERE email LIKE '%@corp.example.com'"
    ) == [(0,)]
    assert pg.fetch_all(second_url, "SELECT count(*) FROM users WHERE is_staff AND active") == [
        (0,)
    ]

    # Teardown: approved, it deletes the clone before Terraform destroys the network.
    teardown = services.start_run(account, RunKind.TEARDOWN)
    waiting = wait_for_run(teardown.pk, statuses=(RunStatus.WAITING_APPROVAL,), timeout=120)
    assert [s.kind for s in waiting.stages.all()] == [
        "teardown_checks", "render", "plan", "approve_plan", "db_teardown", "sweep", "apply",
    ]  # fmt: skip
    services.decide_stage(waiting.stages.get(kind="approve_plan"), user=account.owner, approve=True)
    teardown = wait_for_run(teardown.pk, timeout=120)
    assert teardown.status == RunStatus.SUCCEEDED, explain(teardown)
    account.refresh_from_db()
    assert account.status == AccountStatus.TORN_DOWN
    assert account.endpoints == {}
    assert clone_databases(name) == []
    assert not role_exists(clone_role_name(second_db))
    deleted = teardown.stages.get(kind="db_teardown").outputs["services"]["orders"]["deleted"]
    assert deleted == [f"database {second_db} on 127.0.0.1:5432"]
