"""``manage.py bench_pages [--scale K]``: the pages and API lists at scale.

Creates a database of its own on the configured PostgreSQL server
(``bench_pages_<pid>``), migrates it, and fills it, server-side with
``INSERT ... SELECT generate_series``, with K times 2,000 accounts, 10,000 requests,
10,000 runs, 100,000 stages and 1,000,000 log lines (50 owners; a short approvals
queue). Then it requests every page and API list through Django's full stack (an
approver's session), ``--repeat`` times each after a warm-up, and prints per page the
median and p95 in milliseconds and the number of queries; the database is dropped at
the end, whatever happens. The last line is
``{"scale", "pages": {NAME: {"median_ms", "p95_ms", "queries"}}, "p95_max_ms"}``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts_app.models import Account, AccountRequest
from accounts_app.roles import APPROVERS
from accounts_app.views import DASHBOARD_PAGE_SIZE
from pipelines.cli import PortalCommand, machine_load
from pipelines.models import LogLine, PipelineRun, StageRun

WARMUP = 3
OWNERS = 50
PENDING_REQUESTS = 20
WAITING_RUNS = 10
STAGES_PER_RUN = 10
LINES_PER_STAGE = 10
STAGE_KINDS = [
    "pre_hooks", "render", "plan", "approve_plan", "apply",
    "post_hooks", "db_clone", "dns_cutover", "render", "plan",
]  # fmt: skip
PLAN_OUTPUTS = {
    "add": 3,
    "change": 0,
    "replace": 0,
    "destroy": 0,
    "has_changes": True,
    "resources": [{"address": f"terraform_data.r{n}", "action": "create"} for n in range(3)],
    "unchanged": 0,
    "plan_sha256": "0" * 64,
}


@dataclass(frozen=True)
class Sizes:
    accounts: int
    requests: int
    runs: int

    @classmethod
    def at(cls, scale: float) -> Sizes:
        accounts = max(WAITING_RUNS, round(2_000 * scale))
        runs = max(accounts, round(10_000 * scale))
        return cls(accounts=accounts, requests=max(PENDING_REQUESTS, runs), runs=runs)

    @property
    def stages(self) -> int:
        return self.runs * STAGES_PER_RUN

    @property
    def lines(self) -> int:
        return self.stages * LINES_PER_STAGE


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), math.ceil(share * len(ordered)))) - 1]


@contextmanager
def own_database(name: str) -> Iterator[None]:
    """Point the default connection at a new database ``name`` for the block; drop it after."""
    original = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = original
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _column_defaults(models: list[type[Model]]) -> None:
    """In the bench's own database, give every column with a model default (or a text
    column's empty one) that default in the table too, so the INSERTs below name only the
    columns the pages read."""
    with connection.cursor() as cursor:
        for model in models:
            for field in model._meta.concrete_fields:
                default = field.get_default()  # "" for a text field with none of its own
                if field.primary_key or field.null or default is None:
                    continue
                cursor.execute(
                    f'ALTER TABLE "{model._meta.db_table}" ALTER COLUMN "{field.column}" '
                    "SET DEFAULT %s",
                    [field.get_db_prep_save(default, connection)],
                )


def build(sizes: Sizes) -> None:
    """The data set, made by the server itself (ids are 1..N: the database is new)."""
    _column_defaults([Account, AccountRequest, PipelineRun, StageRun, LogLine])
    user_model = get_user_model()
    users = [user_model(username=f"bench-user-{n}") for n in range(1, OWNERS + 1)]
    for user in users:
        user.set_unusable_password()
    user_model.objects.bulk_create(users)
    with connection.cursor() as cursor:
        run = cursor.execute
        run(
            """
            INSERT INTO accounts_app_account (name, blueprint, config, purpose, owner_id,
                cloud_account_id, outputs, endpoints, resources, registered_version, status,
                expires_at, protected, created_at, updated_at)
            SELECT 'bench-' || lpad(n::text, 8, '0'), 'sandbox',
                jsonb_build_object('cidr', '10.20.0.0/16'),
                (ARRAY['qa','demo','loadtest','standby'])[1 + n %% 4],
                (SELECT min(id) FROM auth_user) + (n - 1) %% %(owners)s, '', '{}', '{}', '[]', '',
                (ARRAY['ready','ready','ready','failed','torn_down'])[1 + n %% 5],
                now() + interval '7 days', false, now() - n * interval '1 minute', now()
            FROM generate_series(1, %(accounts)s) n
            """,
            {"accounts": sizes.accounts, "owners": OWNERS},
        )
        run(
            """
            INSERT INTO accounts_app_accountrequest (account_id, requested_by_id, config,
                purpose, expires_at, reason, parity_warnings, status, decided_by_id,
                decided_at, comment, created_at)
            SELECT 1 + (n - 1) %% %(accounts)s,
                (SELECT min(id) FROM auth_user) + (n - 1) %% %(owners)s, '{}', 'qa',
                NULL, 'for the benchmark', '[]',
                CASE WHEN n > %(requests)s - %(pending)s THEN 'pending' ELSE 'approved' END,
                NULL, NULL, '', now() - (%(requests)s - n) * interval '1 second'
            FROM generate_series(1, %(requests)s) n
            """,
            {
                "accounts": sizes.accounts,
                "requests": sizes.requests,
                "pending": PENDING_REQUESTS,
                "owners": OWNERS,
            },
        )
        # The last run of the first WAITING_RUNS accounts waits for a plan's approval.
        run(
            """
            INSERT INTO pipelines_pipelinerun (account_id, kind, trigger, status, created_by_id,
                blueprint_version, config, cancel_requested, explanation, created_at,
                finished_at)
            SELECT 1 + (n - 1) %% %(accounts)s, 'provision', 'user',
                CASE WHEN n > %(runs)s - %(waiting)s THEN 'waiting_approval'
                     WHEN n %% 7 = 0 THEN 'failed' ELSE 'succeeded' END,
                NULL, '1.0.0', '{}', false, '',
                now() - (%(runs)s - n) * interval '1 second',
                now() - (%(runs)s - n) * interval '1 second' + interval '2 seconds'
            FROM generate_series(1, %(runs)s) n
            """,
            {"accounts": sizes.accounts, "runs": sizes.runs, "waiting": WAITING_RUNS},
        )
        run(
            """
            INSERT INTO pipelines_stagerun (run_id, position, kind, status, attempt, queued_at,
                started_at, finished_at, heartbeat_at, worker, process_group, outputs, error,
                explanation, retryable, retry_from, approval_deadline, decided_by_id,
                decided_at, decision_comment)
            SELECT r, p, (%(kinds)s::text[])[p],
                CASE WHEN r > %(runs)s - %(waiting)s AND p = 4 THEN 'waiting_approval'
                     WHEN r > %(runs)s - %(waiting)s AND p > 4 THEN 'pending'
                     ELSE 'succeeded' END,
                1, now(), now(), now(), now(), 'bench:1', NULL,
                CASE WHEN (%(kinds)s::text[])[p] = 'plan' THEN %(plan)s::jsonb
                     ELSE '{}'::jsonb END,
                '', '', true, '', NULL, NULL, NULL, ''
            FROM generate_series(1, %(runs)s) r, generate_series(1, %(per_run)s) p
            """,
            {
                "runs": sizes.runs,
                "waiting": WAITING_RUNS,
                "per_run": STAGES_PER_RUN,
                "kinds": STAGE_KINDS,
                "plan": json.dumps(PLAN_OUTPUTS),
            },
        )
        run(
            """
            INSERT INTO pipelines_logline (stage_id, attempt, number, time, text)
            SELECT s, 1, l, now(), 'line ' || l || ' of stage ' || s || ': terraform said so'
            FROM generate_series(1, %(stages)s) s, generate_series(1, %(per_stage)s) l
            """,
            {"stages": sizes.stages, "per_stage": LINES_PER_STAGE},
        )
        run("VACUUM ANALYZE")  # as autovacuum leaves a table: its visibility map set


class Command(PortalCommand):
    help = "Time every page and API list on a data set K times 10,000 runs (its own database)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scale", type=float, default=1.0, help="K (default 1)")
        parser.add_argument("--repeat", type=int, default=20, help="timed requests per page")

    def handle(self, *args: Any, **options: Any) -> None:
        scale: float = options["scale"]
        repeat: int = options["repeat"]
        if not 0.001 <= scale <= 100 or not 1 <= repeat <= 1000:
            raise CommandError("--scale must be from 0.001 to 100, --repeat from 1 to 1000")
        sizes = Sizes.at(scale)
        self.stdout.write(f"before: {machine_load()}")
        with own_database(f"bench_pages_{os.getpid()}"):
            started = time.monotonic()
            call_command("migrate", verbosity=0, interactive=False)
            build(sizes)
            self.stdout.write(
                f"built {sizes.accounts} accounts, {sizes.requests} requests, {sizes.runs} runs, "
                f"{sizes.stages} stages, {sizes.lines} log lines in "
                f"{time.monotonic() - started:.1f} s"
            )
            pages = self._measure(sizes=sizes, repeat=repeat)
        for name, figures in pages.items():
            self.stdout.write(
                f"{name:<20} median {figures['median_ms']:8.2f} ms  "
                f"p95 {figures['p95_ms']:8.2f} ms  {figures['queries']} queries"
            )
        result = {
            "scale": scale,
            "pages": pages,
            "p95_max_ms": max(figures["p95_ms"] for figures in pages.values()),
        }
        self.stdout.write(f"after: {machine_load()}")
        self.stdout.write(json.dumps(result))

    def _measure(self, *, sizes: Sizes, repeat: int) -> dict[str, dict[str, Any]]:
        approver = get_user_model().objects.create_user(username="bench-approver")
        approver.groups.add(Group.objects.get(name=APPROVERS))
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(approver)
        run, account = sizes.runs // 2, 1 + (sizes.runs // 2 - 1) % sizes.accounts
        stage = StageRun.objects.get(run_id=run, position=3).pk
        last_page = math.ceil(sizes.accounts / DASHBOARD_PAGE_SIZE)
        htmx = {"HTTP_HX_REQUEST": "true"}
        urls: dict[str, tuple[str, dict[str, str]]] = {
            "dashboard": ("/", {}),
            "dashboard_deep": (f"/?page={last_page}", {}),
            "dashboard_owner": ("/?owner=bench-user-7", {}),
            "account": (f"/accounts/{account}/", {}),
            "run": (f"/runs/{run}/", {}),
            "run_live": (f"/runs/{run}/live/", htmx),
            "stage_log": (f"/runs/{run}/stages/{stage}/log/?after=0", htmx),
            "approvals": ("/approvals/", {}),
            "api_accounts": ("/api/v1/accounts/", {}),
            "api_accounts_deep": (f"/api/v1/accounts/?offset={max(0, sizes.accounts - 50)}", {}),
            "api_requests": ("/api/v1/requests/", {}),
            "api_requests_deep": (f"/api/v1/requests/?offset={max(0, sizes.requests - 50)}", {}),
            "api_run": (f"/api/v1/runs/{run}/", {}),
        }
        pages = {}
        for name, (url, headers) in urls.items():
            for _ in range(WARMUP):
                self._get(client, url=url, headers=headers)
            with CaptureQueriesContext(connection) as captured:
                self._get(client, url=url, headers=headers)
            queries = len(captured)  # now: the next request clears the connection's log
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                self._get(client, url=url, headers=headers)
                times.append((time.perf_counter() - started) * 1000)
            pages[name] = {
                "median_ms": round(statistics.median(times), 2),
                "p95_ms": round(percentile(times, 0.95), 2),
                "queries": queries,
            }
        return pages

    def _get(self, client: Client, *, url: str, headers: dict[str, str]) -> None:
        response = client.get(url, **headers)  # type: ignore[arg-type]
        if response.status_code not in (200, 286):
            raise CommandError(f"{url} answered {response.status_code}")
