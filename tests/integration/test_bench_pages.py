"""``bench_pages``: its output contract and its clean-up, at a small scale."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from accounts_app.models import Account

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = {
    "dashboard", "dashboard_deep", "dashboard_owner", "account", "run", "run_live",
    "stage_log", "approvals", "api_accounts", "api_accounts_deep", "api_requests",
    "api_requests_deep", "api_run",
}  # fmt: skip


def bench_databases() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_pages\\_%'")
        return {row[0] for row in cursor.fetchall()}


def test_bench_pages_prints_every_page_and_drops_its_database() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("bench_pages needs PostgreSQL")
    before = bench_databases()
    out = StringIO()
    call_command("bench_pages", scale=0.01, repeat=2, stdout=out)

    lines = out.getvalue().strip().splitlines()
    figures = json.loads(lines[-1])
    assert list(figures) == ["scale", "pages", "p95_max_ms"]
    assert figures["scale"] == 0.01
    assert set(figures["pages"]) == PAGES
    for name, page in figures["pages"].items():
        assert list(page) == ["median_ms", "p95_ms", "queries"], name
        assert 0 < page["median_ms"] <= page["p95_ms"] <= figures["p95_max_ms"], name
        assert 0 < page["queries"] <= 14, name  # as test_query_counts
    assert figures["p95_max_ms"] == max(page["p95_ms"] for page in figures["pages"].values())
    assert lines[0].startswith("before: load average ")
    assert lines[1].startswith("built 20 accounts, 100 requests, 100 runs, 1000 stages")
    assert lines[-2].startswith("after: load average ")
    # Its data lived in a database of its own, dropped at the end; this one is untouched.
    assert bench_databases() <= before
    assert not Account.objects.exists()
