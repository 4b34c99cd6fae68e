"""Fixtures and helpers for the database clone stages (db_clone, dns_cutover).

The Celery worker copies its environment once, at start; ``worker_env`` in
tests/conftest.py gives every session's worker what the clone stages need
(tests/clone_env.py): the named connections ``PORTAL_CONNECTION_DBCLONE_SRC`` /
``_TGT`` of the test blueprints, the moto server's endpoint and dummy keys,
``PORTAL_RDS_ENDPOINT_RESOLVER`` (moto restores no real database, so the RDS
scrub step reaches a local stand-in database, ``rds_scrub_db``, with the master
user and password the product read from Secrets Manager) and short RDS/DNS polls.

The source database itself is created only when a test asks for ``clone_source``,
and every database and role the clone tests of this session make (names start with
``dct<session token>_``) is dropped at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from pipelines import engine
from pipelines.clients import postgres as pg
from pipelines.models import LogLine, PipelineRun, StageRun, StageStatus
from tests.clone_env import (
    ACCOUNT_PREFIX,
    ADMIN_URL,
    RDS_MASTER_USER,
    SOURCE_DB,
    rds_standin_database,
)
from tests.conftest import wait_until

SOURCE_SQL = r"""
CREATE TABLE users (
    id serial PRIMARY KEY,
    email varchar(120) NOT NULL UNIQUE,
    full_name text NOT NULL,
    phone varchar(20),
    address text,
    password_hash text,
    api_token text,
    is_staff boolean NOT NULL DEFAULT false,
    active boolean NOT NULL DEFAULT true
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id),
    customer_email varchar(120) NOT NULL,
    shipping_name text,
    total numeric(10, 2) NOT NULL
);
CREATE INDEX orders_customer_email ON orders (customer_email);
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    card_number text NOT NULL,
    iban text
);
CREATE TABLE events (
    id bigserial,
    happened date NOT NULL,
    actor_email text,
    PRIMARY KEY (id, happened)
) PARTITION BY RANGE (happened);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');

INSERT INTO users (email, full_name, phone, address, password_hash, api_token, is_staff)
SELECT 'person' || g || '@corp.example.com', 'Real Person ' || g,
       CASE WHEN g % 7 = 0 THEN NULL ELSE '+44 20 7946 ' || lpad(g::text, 4, '0') END,
       g || ' High Street', 'pbkdf2$' || md5('pw' || g), md5(g::text), g % 50 = 0
FROM generate_series(1, 3000) g;
INSERT INTO orders (user_id, customer_email, shipping_name, total)
SELECT u.id, u.email, u.full_name, (g % 97) + 0.5
FROM generate_series(1, 9000) g JOIN users u ON u.id = 1 + g % 3000;
INSERT INTO payments (order_id, card_number, iban)
SELECT id, '4111 1111 1111 ' || lpad((id % 10000)::text, 4, '0'), 'DE' || lpad(id::text, 20, '0')
FROM orders WHERE id % 2 = 0;
INSERT INTO events (happened, actor_email)
SELECT date '2024-06-01' + (g % 500), 'person' || (1 + g % 3000) || '@corp.example.com'
FROM generate_series(1, 2000) g;
"""

RDS_SCRUB_SQL = """
CREATE TABLE users (id serial PRIMARY KEY, email text, is_staff boolean, active boolean);
INSERT INTO users (email, is_staff, active)
SELECT 'staff' || g || '@corp.example.com', g % 3 = 0, true FROM generate_series(1, 30) g;
"""


@dataclass(frozen=True)
class CloneSource:
    url: str  # the source database (PORTAL_CONNECTION_DBCLONE_SRC)
    admin_url: str  # the target server (PORTAL_CONNECTION_DBCLONE_TGT)


def q(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    return pg.fetch_all(url, query, params)


@contextlib.contextmanager
def scratch_database(*, name: str, sql: str) -> Iterator[str]:
    """Database ``name`` on the test server, made afresh and filled by ``sql``; dropped after."""
    pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.execute(ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        url = pg.with_dbname(ADMIN_URL, name)
        pg.execute(url, sql)
        yield url
    finally:
        pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def clone_source() -> Iterator[CloneSource]:
    """The generated source database; this session's clone databases and roles dropped after."""
    try:
        with scratch_database(name=SOURCE_DB, sql=SOURCE_SQL) as url:
            yield CloneSource(url=url, admin_url=ADMIN_URL)
    finally:
        drop_test_clones()


@pytest.fixture(scope="session")
def rds_scrub_db() -> Iterator[str]:
    """The local database that stands in for database ``orders`` of a restored RDS
    instance, owned by the instances' master user (a role for this session)."""
    name = rds_standin_database("orders")
    pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg.execute(ADMIN_URL, f'DROP ROLE IF EXISTS "{RDS_MASTER_USER}"')
    pg.execute(ADMIN_URL, f'CREATE ROLE "{RDS_MASTER_USER}" LOGIN')
    pg.execute(ADMIN_URL, f'CREATE DATABASE "{name}" OWNER "{RDS_MASTER_USER}"')
    url = pg.with_dbname(ADMIN_URL, name)
    try:
        pg.execute(make_conninfo(url, user=RDS_MASTER_USER), RDS_SCRUB_SQL)
        yield url
    finally:
        pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg.execute(ADMIN_URL, f'DROP ROLE IF EXISTS "{RDS_MASTER_USER}"')


def clone_databases(account_name: str = "") -> list[str]:
    """Names of the clone databases of test accounts (of one account when given)."""
    prefix = (account_name or ACCOUNT_PREFIX).replace("-", "_")
    return [
        row[0]
        for row in pg.fetch_all(
            ADMIN_URL,
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
            (prefix + "_" if account_name else prefix,),
        )
    ]


def drop_test_clones() -> None:
    for database in clone_databases():
        pg.execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    for (role,) in pg.fetch_all(
        ADMIN_URL,
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)",
        (ACCOUNT_PREFIX.replace("-", "_"),),
    ):
        pg.execute(ADMIN_URL, f'DROP ROLE IF EXISTS "{role}"')


# --- helpers for the clone stage tests ----------------------------------------------------


def unique_account_name() -> str:
    return f"{ACCOUNT_PREFIX}{secrets.token_hex(4)}"


def stage_log(stage: StageRun) -> list[str]:
    return list(
        LogLine.objects.filter(stage=stage).order_by("number").values_list("text", flat=True)
    )


def kill_reap_retry(stage: StageRun, settings: Any) -> StageRun:
    """SIGKILL the worker child running ``stage`` (as tests/integration/test_engine.py
    does); the redelivered message finds the process gone and takes the stage over as a
    new attempt (pipelines/engine.py ``_claim``). Returns the stage, running again."""
    stage.refresh_from_db()
    assert stage.status == StageStatus.RUNNING, stage.status
    killed = stage.attempt
    os.kill(int(stage.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    wait_until(
        lambda: StageRun.objects.get(pk=stage.pk).attempt > killed,
        timeout=30,
        what="the killed stage to be taken over",
    )
    stage.refresh_from_db()
    assert any(f"{engine.WORKER_LOST}: " in line for line in stage_log(stage))
    return stage


def explain(run: PipelineRun) -> str:
    return f"{run.explanation}: " + str(
        [(s.kind, s.status, s.explanation) for s in run.stages.all()]
    )
