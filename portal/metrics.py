"""The portal's numbers in Prometheus' text format (served at /metrics).

Read from the database on each scrape, so every web process gives the same answer:
runs by status, stages by status (queued = queue depth), stage durations as a
histogram per stage kind, stages failed by the reaper, and the outbox size when the
engine has an outbox (pipelines.OutboxMessage).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.apps import apps
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum

from pipelines.engine import WORKER_LOST
from pipelines.models import PipelineRun, RunStatus, StageRun, StageStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: stages range from a render (under a second) to an apply or a clone (hours).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"


def _by_status(
    name: str, help_text: str, counts: dict[str, int], statuses: Iterable[str]
) -> Iterator[str]:
    yield from _family(name, "gauge", help_text)
    for status in statuses:
        yield f'{name}{{status="{status}"}} {counts.get(status, 0)}'


def _run_lines() -> Iterator[str]:
    counts = dict(PipelineRun.objects.values_list("status").annotate(n=Count("pk")))
    yield from _by_status("portal_runs", "Pipeline runs by status.", counts, RunStatus.values)


def _stage_lines() -> Iterator[str]:
    counts = dict(StageRun.objects.values_list("status").annotate(n=Count("pk")))
    yield from _by_status(
        "portal_stages", "Stage runs by status (queued: the queue depth).", counts,
        StageStatus.values,
    )  # fmt: skip
    yield from _family("portal_stages_queued", "gauge", "Stages waiting for a worker.")
    yield f"portal_stages_queued {counts.get(StageStatus.QUEUED, 0)}"
    lost = StageRun.objects.filter(explanation=WORKER_LOST).count()
    yield from _family(
        "portal_stages_worker_lost", "gauge", "Stages the reaper failed because their worker died."
    )
    yield f"portal_stages_worker_lost {lost}"


def _duration_lines() -> Iterator[str]:
    name = "portal_stage_duration_seconds"
    buckets = {
        f"le_{index}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(DURATION_BUCKETS)
    }
    rows = (
        StageRun.objects.filter(started_at__isnull=False, finished_at__isnull=False)
        .annotate(
            duration=ExpressionWrapper(
                F("finished_at") - F("started_at"), output_field=DurationField()
            )
        )
        .values("kind")
        .annotate(count=Count("pk"), total=Sum("duration"), **buckets)
        .order_by("kind")
    )
    yield from _family(name, "histogram", "Time from a stage's start to its end, by kind.")
    for row in rows:
        kind = _label(row["kind"])
        for index, bound in enumerate(DURATION_BUCKETS):
            yield f'{name}_bucket{{kind="{kind}",le="{bound:g}"}} {row[f"le_{index}"]}'
        yield f'{name}_bucket{{kind="{kind}",le="+Inf"}} {row["count"]}'
        total = row["total"] or timedelta()
        yield f'{name}_sum{{kind="{kind}"}} {total.total_seconds():.3f}'
        yield f'{name}_count{{kind="{kind}"}} {row["count"]}'


def _outbox_lines() -> Iterator[str]:
    try:
        outbox = apps.get_model("pipelines", "OutboxMessage")
    except LookupError:  # an engine without an outbox: nothing to report
        return
    yield from _family("portal_outbox_messages", "gauge", "Messages waiting to be sent.")
    yield f"portal_outbox_messages {outbox._default_manager.count()}"


def render() -> str:
    lines = [*_run_lines(), *_stage_lines(), *_duration_lines(), *_outbox_lines()]
    return "\n".join(lines) + "\n"
