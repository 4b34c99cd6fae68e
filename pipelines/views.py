from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts_app.selectors import visible_accounts
from pipelines import selectors, services
from pipelines.models import PipelineRun, StageRun


def _visible_run(request: HttpRequest, run_id: int) -> PipelineRun:
    run = selectors.run_with_stages(run_id) if PipelineRun.objects.filter(pk=run_id).exists() else None
    if run is None or not visible_accounts(request.user).filter(pk=run.account_id).exists():
        raise Http404("no such run")
    return run


@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _visible_run(request, run_id)
    return render(request, "pipelines/run.html", {"run": run, "stages": run.stages.all()})


@login_required
def stage_log(request: HttpRequest, run_id: int, stage_id: int) -> HttpResponse:
    run = _visible_run(request, run_id)
    stage = get_object_or_404(StageRun, pk=stage_id, run=run)
    after = int(request.GET.get("after", "0") or 0)
    lines = selectors.log_after(stage, after)
    return render(
        request,
        "pipelines/_log_lines.html",
        {"run": run, "stage": stage, "lines": lines, "next": lines[-1].number if lines else after},
    )


@require_POST
@user_passes_test(lambda u: u.is_staff)
def retry(request: HttpRequest, run_id: int, stage_id: int) -> HttpResponse:
    run = _visible_run(request, run_id)
    stage = get_object_or_404(StageRun, pk=stage_id, run=run)
    try:
        services.retry_stage(stage, user=request.user)  # type: ignore[arg-type]
    except services.RunRefused as exc:
        messages.error(request, str(exc))
    return redirect("run-detail", run_id=run.pk)


@require_POST
@user_passes_test(lambda u: u.is_staff)
def cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _visible_run(request, run_id)
    try:
        services.cancel_run(run, user=request.user)  # type: ignore[arg-type]
    except services.RunRefused as exc:
        messages.error(request, str(exc))
    return redirect("run-detail", run_id=run.pk)
