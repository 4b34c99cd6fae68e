"""``bench_pipeline``: its output contract, on a real worker it starts itself (small N)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from accounts_app.models import Account
from pipelines.management.commands.bench_pipeline import percentile
from pipelines.models import PipelineRun

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def state_schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tfstate\\_bench%'")
        return {row[0] for row in cursor.fetchall()}


def test_bench_pipeline_prints_its_figures_and_cleans_up() -> None:
    before = state_schemas()
    out = StringIO()
    call_command("bench_pipeline", runs=2, sandbox_runs=1, stdout=out)

    lines = out.getvalue().strip().splitlines()
    figures = json.loads(lines[-1])
    assert list(figures) == [
        "runs", "gap_median_ms", "gap_p95_ms", "noop_stage_ms", "celery_hop_ms"
    ]  # fmt: skip
    assert figures["runs"] == 2
    assert 0 < figures["gap_median_ms"] <= figures["gap_p95_ms"]
    assert figures["noop_stage_ms"] > 0 and figures["celery_hop_ms"] > 0
    text = "\n".join(lines[:-1])
    assert "bare Celery hop" in text and "worker memory" in text
    assert "the same Terraform commands by hand in one shell" in text
    assert lines[0].startswith("before: load average ") and lines[-2].startswith("after: load")
    # Nothing of the benchmark stays behind: accounts, runs, Terraform state.
    assert not Account.objects.filter(name__startswith="bench-").exists()
    assert not PipelineRun.objects.exists()
    assert state_schemas() <= before


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([3.0], 0.95) == 3.0
