"""Web pages about runs: the run page, its live parts (htmx polling) and its actions.

Live updates are plain GET polling, so they keep working behind any proxy:
- the run's summary (status, explanation, timeline, actions) and every stage's head
  refresh from ``run-live`` every ~1.5 s (stage heads swapped out-of-band); the
  response is HTTP 286 once the run is finished, which stops htmx polling;
- each unfinished stage's log appends only new lines from
  ``stage-log?after=N``: the answer is the new lines followed by a fresh poller
  carrying the new N, or no poller (and 286) once the stage is finished.
Without JavaScript the page is complete at load time and the forms still post.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts_app import permissions
from accounts_app import selectors as account_selectors
from accounts_app.views import acting_user, page, safe_next
from pipelines import selectors, services
from pipelines.clients.terraform import PlanSummary
from pipelines.models import (
    FINISHED_STAGE_STATUSES,
    LogLine,
    PipelineRun,
    RunKind,
    RunStatus,
    StageRun,
    StageStatus,
)
from pipelines.timeline import build_timeline, format_duration
from portal import lookups
from portal.web_errors import attempt

# Lines of each stage's log shown when the page loads; the rest is one click away.
INITIAL_LOG_LINES = 300
HTMX_STOP_POLLING = 286
T = TypeVar("T")


def _is_finished(stage: StageRun) -> bool:
    return stage.status in FINISHED_STAGE_STATUSES


@dataclass
class StageRow:
    """A stage as the run page shows it: the stage plus what this user may do with it."""

    stage: StageRun
    finished: bool
    show_retry: bool
    show_decide: bool
    summary: PlanSummary | None
    lines: list[LogLine] = field(default_factory=list)

    @property
    def is_followed(self) -> bool:
        return not self.finished

    @property
    def last_number(self) -> int:
        return self.lines[-1].number if self.lines else 0

    @property
    def truncated(self) -> bool:
        return bool(self.lines) and self.lines[0].number > 1


def _run_context(request: HttpRequest, run: PipelineRun) -> dict[str, Any]:
    """What the run summary and the stage heads need; no query per stage."""
    stages = list(run.stages.all())
    now = timezone.now()
    user = request.user
    can_retry = permissions.can_retry(user=user, run=run)
    can_decide = permissions.can_decide(user)
    failed = next((s for s in stages if s.status == StageStatus.FAILED), None)
    explanation = run.explanation or (f"{failed.kind}: {failed.explanation}" if failed else "")
    summary = selectors.plan_summary_of_run(stages)
    # The summary goes on the approval stage when there is one, else on the plan itself.
    kinds = {s.kind for s in stages}
    summary_kind = next((k for k in selectors.PLAN_STAGE_KINDS if k in kinds), "plan")
    rows = [
        StageRow(
            stage=stage,
            finished=_is_finished(stage),
            # Only where it can help: a failure a retry may fix, or a cancelled stage.
            show_retry=can_retry
            and not run.is_active
            and (
                (stage.status == StageStatus.FAILED and stage.retryable)
                or (stage.status == StageStatus.CANCELLED and stage.started_at is not None)
            ),
            show_decide=can_decide and stage.status == StageStatus.WAITING_APPROVAL,
            summary=summary if stage.kind == summary_kind else None,
        )
        for stage in stages
    ]
    return {
        "run": run,
        "account": run.account,
        "rows": rows,
        "timeline": build_timeline(stages, now=now, start=run.created_at),
        "duration": format_duration(((run.finished_at or now) - run.created_at).total_seconds()),
        "explanation": explanation.splitlines()[0] if explanation else "",
        "show_cancel": run.is_active and permissions.can_cancel(user=user, run=run),
        "resume_stage": services.resumable_stage(run) if can_retry else None,
        "explanation_label": "Cancelled" if run.status == RunStatus.CANCELLED else "Failed",
        "run_finished": not run.is_active,
    }


RUNS_PAGE_SIZE = 50


@require_GET
@login_required
def runs_list(request: HttpRequest) -> HttpResponse:
    """Runs across the accounts the user may see: filtered, searched, sorted, paged."""
    query = {key: request.GET.get(key, "").strip()[:100] for key in RUN_FILTERS}
    runs = account_selectors.filter_runs(
        account_selectors.visible_runs(request.user),
        account=query["account"] or None,
        kind=query["kind"] if query["kind"] in RunKind.values else None,
        status=query["status"] if query["status"] in RunStatus.values else None,
        search=query["q"] or None,
        sort=query["sort"] or None,
    )
    runs_page = Paginator(runs, RUNS_PAGE_SIZE).get_page(request.GET.get("page"))
    return page(
        request,
        "pipelines/runs.html",
        {
            "runs_page": runs_page,
            "query": query,
            "kinds": RunKind.choices,
            "statuses": RunStatus.choices,
            "sorts": [
                ("-started", "Newest"),
                ("started", "Oldest"),
                ("-duration", "Longest"),
                ("account", "Account"),
                ("status", "Status"),
                ("kind", "Kind"),
            ],
            "keep": urlencode({k: v for k, v in query.items() if v}),
        },
    )


RUN_FILTERS = ("account", "kind", "status", "q", "sort")


def _initial_logs(stages: list[StageRun]) -> dict[int, list[LogLine]]:
    """The last INITIAL_LOG_LINES lines of every stage, in one query."""
    ranked = (
        LogLine.objects.filter(stage_id__in=[s.pk for s in stages])
        .annotate(
            from_end=Window(RowNumber(), partition_by=[F("stage_id")], order_by=F("number").desc())
        )
        .filter(from_end__lte=INITIAL_LOG_LINES)
        .order_by("stage_id", "number")
    )
    logs: dict[int, list[LogLine]] = defaultdict(list)
    for line in ranked:
        logs[line.stage_id].append(line)
    return logs


@require_GET
@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = lookups.visible_run(user=request.user, run_id=run_id)
    context = _run_context(request, run)
    rows: list[StageRow] = context["rows"]
    logs = _initial_logs([row.stage for row in rows])
    for row in rows:
        row.lines = logs.get(row.stage.pk, [])
    # Stages whose log is not followed: if one becomes active again (a retry by someone
    # else), the live poll asks the browser to reload the page.
    context["unwatched"] = ",".join(str(r.stage.pk) for r in rows if r.finished)
    # Stages shown with an approve/reject form; a new one needs a reload to show its form.
    context["deciding"] = ",".join(str(r.stage.pk) for r in rows if r.show_decide)
    return page(request, "pipelines/run.html", context)


def _ids(text: str) -> set[int]:
    return {int(part) for part in text.split(",") if part.isdigit()}


@require_GET
@login_required
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run summary plus every stage head (out of band), for htmx polling."""
    run = lookups.visible_run(user=request.user, run_id=run_id)
    context = _run_context(request, run)
    unwatched = _ids(request.GET.get("unwatched", ""))
    deciding = _ids(request.GET.get("deciding", ""))
    context["unwatched"] = ",".join(map(str, sorted(unwatched)))
    context["deciding"] = ",".join(map(str, sorted(deciding)))
    response = HttpResponse(render_to_string("pipelines/_run_live.html", context, request))
    rows: list[StageRow] = context["rows"]
    if any(r.stage.pk in unwatched and not r.finished for r in rows) or any(
        r.show_decide and r.stage.pk not in deciding for r in rows
    ):
        # A stage came back to life (someone retried it) or now waits for this user's
        # decision: the page's log pollers and forms are set at load, so load it again.
        response["HX-Refresh"] = "true"
    elif context["run_finished"]:
        response.status_code = HTMX_STOP_POLLING
    return response


@require_GET
@login_required
def stage_log(request: HttpRequest, run_id: int, stage_id: int) -> HttpResponse:
    """Lines after ``?after=N``: an htmx fragment (with the next poller), or plain text."""
    run, stage = lookups.visible_stage(user=request.user, run_id=run_id, stage_id=stage_id)
    try:
        after = max(0, int(request.GET.get("after", "0") or 0))
    except ValueError:
        after = 0
    # Status first, lines second: lines written before a stage finished are all visible then.
    finished = _is_finished(stage)
    lines = selectors.log_after(stage=stage, after=after)
    next_after = lines[-1].number if lines else after
    more = len(lines) >= selectors.LOG_PAGE_SIZE
    if not request.headers.get("HX-Request"):
        text = "".join(f"{ln.number:>5} {ln.time:%H:%M:%S} {ln.text}\n" for ln in lines)
        return HttpResponse(text, content_type="text/plain; charset=utf-8")
    follow = more or not finished
    response = render(
        request,
        "pipelines/_log_lines.html",
        {
            "run": run,
            "stage": stage,
            "lines": lines,
            "next": next_after,
            "follow": follow,
            "interval": "1s" if stage.status == StageStatus.RUNNING or more else "2s",
        },
    )
    if not follow:
        response.status_code = HTMX_STOP_POLLING
    return response


def _act(
    request: HttpRequest,
    *,
    run: PipelineRun,
    allowed: bool,
    forbidden: str,
    action: Callable[[], T],
    success: Callable[[T], str],
) -> HttpResponse:
    """A run's action button: refused (403) unless allowed, its outcome on the run page."""
    if not allowed:
        raise PermissionDenied(forbidden)
    attempt(request, action=action, success=success)
    return redirect("run-detail", run_id=run.pk)


@require_POST
@login_required
def retry(request: HttpRequest, run_id: int, stage_id: int) -> HttpResponse:
    run, stage = lookups.visible_stage(user=request.user, run_id=run_id, stage_id=stage_id)
    return _act(
        request,
        run=run,
        allowed=permissions.can_retry(user=request.user, run=run),
        forbidden="you may not retry stages of this run",
        action=lambda: services.retry_stage(stage, user=acting_user(request)),
        success=lambda first: f"Retrying {first.kind}.",
    )


@require_POST
@login_required
def resume(request: HttpRequest, run_id: int) -> HttpResponse:
    run = lookups.visible_run(user=request.user, run_id=run_id)
    return _act(
        request,
        run=run,
        allowed=permissions.can_retry(user=request.user, run=run),
        forbidden="you may not resume this run",
        action=lambda: services.resume_run(run, user=acting_user(request)),
        success=lambda first: f"Resuming from {first.kind}.",
    )


@require_POST
@login_required
def cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = lookups.visible_run(user=request.user, run_id=run_id)
    return _act(
        request,
        run=run,
        allowed=permissions.can_cancel(user=request.user, run=run),
        forbidden="you may not cancel this run",
        action=lambda: services.cancel_run(run, user=acting_user(request)),
        success=lambda _: "Cancel requested: the running stage stops at its next check.",
    )


def _decide(request: HttpRequest, run_id: int, stage_id: int, *, approve: bool) -> HttpResponse:
    run, stage = lookups.visible_stage(user=request.user, run_id=run_id, stage_id=stage_id)
    if not permissions.can_decide(request.user):
        raise PermissionDenied("only approvers decide plans")
    verb = "Approved" if approve else "Rejected"
    attempt(
        request,
        action=lambda: services.decide_stage(
            stage,
            user=acting_user(request),
            approve=approve,
            comment=request.POST.get("comment", ""),
        ),
        success=lambda _: f"{verb} the plan of run #{run.pk} ({run.account.name}).",
    )
    return HttpResponseRedirect(safe_next(request, fallback=reverse("run-detail", args=[run.pk])))


@require_POST
@login_required
def stage_approve(request: HttpRequest, run_id: int, stage_id: int) -> HttpResponse:
    return _decide(request, run_id, stage_id, approve=True)


@require_POST
@login_required
def stage_reject(request: HttpRequest, run_id: int, stage_id: int) -> HttpResponse:
    return _decide(request, run_id, stage_id, approve=False)
