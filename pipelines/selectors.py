"""Reads on runs, stages, logs and plan summaries, for every interface alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import F, Prefetch, QuerySet

from pipelines.clients.terraform import PlanSummary
from pipelines.models import (
    BUILDING_KINDS,
    Artifact,
    LogLine,
    PipelineRun,
    RunStatus,
    StageRun,
    StageStatus,
)
from pipelines.stages.render import TERRAFORM_PREFIX

LOG_PAGE_SIZE = 500
PLAN_COUNTS = ("add", "change", "replace", "destroy")
# Stages whose outputs hold a plan summary: the plan, and the approval that copies it.
PLAN_STAGE_KINDS = ("approve_plan", "plan", "drift_plan")


def run_with_stages(run_id: int) -> PipelineRun:
    """Any run with its account and its stages (by position); DoesNotExist when none.

    No visibility filter: for callers that already decided who may see it
    (management commands); interfaces use ``accounts_app.selectors.visible_run``.
    """
    return (
        PipelineRun.objects.select_related("account", "account__owner", "created_by")
        .prefetch_related(Prefetch("stages", queryset=StageRun.objects.order_by("position")))
        .get(pk=run_id)
    )


def stage_in_run(*, run: PipelineRun, stage_id: int) -> StageRun | None:
    """The stage of the run with this id (from the prefetched stages), or None."""
    return next((stage for stage in run.stages.all() if stage.pk == stage_id), None)


def log_after(*, stage: StageRun, after: int, limit: int = LOG_PAGE_SIZE) -> list[LogLine]:
    """The stage's log lines numbered above ``after``, at most ``limit`` of them."""
    return list(stage.log_lines.filter(number__gt=after).order_by("number")[:limit])


def runs_of_account(account_id: int) -> QuerySet[PipelineRun]:
    return PipelineRun.objects.filter(account_id=account_id).order_by("-created_at", "-id")


# --- plan summaries -------------------------------------------------------------------------


def plan_summary_from(outputs: object) -> PlanSummary | None:
    """The plan summary held by a plan (or approve_plan) stage's outputs, or None.

    Outputs are JSON written by the plan stage: counts missing from them read as 0,
    malformed resource entries are left out; outputs with no count hold no plan.
    """
    if not isinstance(outputs, Mapping):
        return None
    if not any(isinstance(outputs.get(key), int) for key in PLAN_COUNTS):
        return None
    resources = [
        {"address": str(item["address"]), "action": str(item.get("action", ""))}
        for item in outputs.get("resources") or []
        if isinstance(item, Mapping) and "address" in item
    ]
    output_changes = outputs.get("output_changes") or []
    return PlanSummary.from_dict(
        {
            **{key: _count(outputs.get(key)) for key in PLAN_COUNTS},
            "resources": resources,
            "output_changes": [str(name) for name in output_changes]
            if isinstance(output_changes, list)
            else [],
            "terraform_version": str(outputs.get("terraform_version") or ""),
        }
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def plan_summary_of(stage: StageRun) -> PlanSummary | None:
    """The plan summary a plan or approve_plan stage recorded, or None."""
    return plan_summary_from(stage.outputs)


def plan_summary_of_run(stages: Iterable[StageRun]) -> PlanSummary | None:
    """The run's plan summary: from its approval stage, else its plan stage (no query)."""
    by_kind = {stage.kind: stage for stage in stages if stage.kind in PLAN_STAGE_KINDS}
    for kind in PLAN_STAGE_KINDS:
        summary = plan_summary_of(by_kind[kind]) if kind in by_kind else None
        if summary is not None:
            return summary
    return None


def latest_plan(account_id: int) -> tuple[StageRun, PlanSummary] | None:
    """The account's newest succeeded plan stage and its summary, or None (one query)."""
    stage = (
        StageRun.objects.filter(
            run__account_id=account_id, kind="plan", status=StageStatus.SUCCEEDED
        )
        .order_by(F("finished_at").desc(nulls_last=True), "-run__created_at", "-id")
        .first()
    )
    if stage is None:
        return None
    summary = plan_summary_of(stage)
    return (stage, summary) if summary is not None else None


@dataclass(frozen=True)
class RunPlan:
    """What a run's plan stage recorded: its summary and its parity check (or None)."""

    summary: PlanSummary | None
    parity: dict[str, Any] | None


def plans_of_runs(run_ids: Iterable[int]) -> dict[int, RunPlan]:
    """Each run's plan (summary and parity check) by run id, for runs whose plan stage
    recorded one (one query)."""
    found: dict[int, RunPlan] = {}
    plans = StageRun.objects.filter(run_id__in=list(run_ids), kind="plan").only("run_id", "outputs")
    for stage in plans.order_by("position"):
        summary = plan_summary_of(stage)
        outputs = stage.outputs if isinstance(stage.outputs, dict) else {}
        parity = outputs.get("parity")
        if summary is not None or isinstance(parity, dict):
            found.setdefault(
                stage.run_id,
                RunPlan(summary=summary, parity=parity if isinstance(parity, dict) else None),
            )
    return found


def last_applied_run(account_id: int) -> PipelineRun | None:
    """The account's latest succeeded provision or update: what its infrastructure is."""
    return (
        PipelineRun.objects.filter(
            account_id=account_id, kind__in=BUILDING_KINDS, status=RunStatus.SUCCEEDED
        )
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .first()
    )


def has_stored_render(run_id: int) -> bool:
    """Whether the run's rendered Terraform is stored with it."""
    return Artifact.objects.filter(run_id=run_id, name__startswith=TERRAFORM_PREFIX).exists()
