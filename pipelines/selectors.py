"""Reads on runs, stages and logs."""

from __future__ import annotations

from django.db.models import QuerySet

from pipelines.models import LogLine, PipelineRun, StageRun

LOG_PAGE_SIZE = 500


def run_with_stages(run_id: int) -> PipelineRun:
    return (
        PipelineRun.objects.select_related("account", "account__owner", "created_by")
        .prefetch_related("stages")
        .get(pk=run_id)
    )


def log_after(stage: StageRun, after: int, limit: int = LOG_PAGE_SIZE) -> list[LogLine]:
    """The stage's log lines numbered above ``after``, at most ``limit`` of them."""
    return list(stage.log_lines.filter(number__gt=after).order_by("number")[:limit])


def runs_of_account(account_id: int) -> QuerySet[PipelineRun]:
    return PipelineRun.objects.filter(account_id=account_id).order_by("-created_at", "-id")
