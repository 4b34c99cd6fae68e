"""Web pages about accounts: dashboard, request form, approvals, account page.

Views stay thin: who may do what is decided by accounts_app.permissions, writes
go through the services, and each page runs a fixed number of queries however
many accounts, runs or requests it shows.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts_app import permissions, services
from accounts_app.forms import (
    ACCOUNT_NAME_KEY,
    SERVICE_FIELD_NAMES,
    RequestMetaForm,
    SchemaForm,
    expiry_datetime,
)
from accounts_app.models import Account, AccountRequest, AccountStatus, Purpose, RequestStatus
from accounts_app.selectors import visible_accounts
from pipelines.blueprints import (
    Blueprint,
    BlueprintError,
    ConfigInvalid,
    list_blueprints,
    load_blueprint,
)
from pipelines.models import PipelineRun, RunKind, StageRun, StageStatus

DASHBOARD_PAGE_SIZE = 25
# Accounts on which the account page offers no run buttons.
NO_RUN_STATUSES = (AccountStatus.REQUESTED, AccountStatus.REJECTED, AccountStatus.TORN_DOWN)
ACCOUNT_RUNS_SHOWN = 20


def page(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """Render a page with the role flags the layout needs (navigation, buttons)."""
    context = {**permissions.roles_for_templates(request.user), **context}
    return render(request, template, context, status=status)


def acting_user(request: HttpRequest) -> Any:
    """The logged-in user as a real model instance (services look at ``type(user)``)."""
    user = request.user
    _ = user.pk  # evaluates the lazy object
    return getattr(user, "_wrapped", user)


def safe_next(request: HttpRequest, fallback: str) -> str:
    """The form's ``next`` when it points back into the portal, else ``fallback``."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def pretty(value: Any) -> str:
    """A config or output value for a page: strings as they are, a list one item per line,
    a mapping as ``key: value`` pairs, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_compact(item) for item in value) if value else "(none)"
    return _compact(value)


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_compact(item)}" for key, item in sorted(value.items()))
    return json.dumps(value, sort_keys=True)


# --- plan summaries (the plan stage's outputs, read defensively) -----------------------------

PLAN_ACTIONS = ("add", "change", "replace", "destroy")
_ACTION_ALIASES = {
    "add": ("add", "adds", "to_add", "create", "creates"),
    "change": ("change", "changes", "to_change", "update", "updates"),
    "replace": ("replace", "replaces", "to_replace"),
    "destroy": ("destroy", "destroys", "to_destroy", "delete", "deletes"),
}


def plan_summary(outputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Counts per action and the resource list from a plan stage's outputs, if it has them.

    Returns ``{"counts": [(action, n)...], "resources": [(address, action)...], "total": n}``
    or None when the outputs hold no plan.
    """
    if not isinstance(outputs, dict):
        return None
    sources = [outputs]
    for key in ("summary", "counts", "plan", "changes"):
        if isinstance(outputs.get(key), dict):
            sources.insert(0, outputs[key])
    counts: dict[str, int] = {}
    for action in PLAN_ACTIONS:
        for source in sources:
            found = next(
                (source[a] for a in _ACTION_ALIASES[action] if isinstance(source.get(a), int)),
                None,
            )
            if found is not None:
                counts[action] = int(found)
                break
    resources: list[tuple[str, str]] = []
    for source in sources:
        for key in ("resources", "resource_changes", "changed_resources", "changes"):
            items = source.get(key)
            if isinstance(items, list):
                resources = [_resource_line(item) for item in items]
                break
        if resources:
            break
    if not counts and not resources:
        return None
    if not counts:
        for _, action in resources:
            if action in PLAN_ACTIONS:
                counts[action] = counts.get(action, 0) + 1
    reason = outputs.get("reason")
    return {
        "reason": reason if isinstance(reason, str) else "",
        "counts": [(action, counts.get(action, 0)) for action in PLAN_ACTIONS],
        "resources": resources,
        "total": sum(counts.values()),
    }


def _resource_line(item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        return item, ""
    if not isinstance(item, dict):
        return str(item), ""
    address = str(item.get("address") or item.get("name") or item.get("resource") or "?")
    action = item.get("action") or item.get("actions") or item.get("change") or ""
    if isinstance(action, list):
        action = "replace" if sorted(action) == ["create", "delete"] else "/".join(map(str, action))
    action = {"create": "add", "update": "change", "delete": "destroy"}.get(
        str(action), str(action)
    )
    return address, action


# --- dashboard ---------------------------------------------------------------------------


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    visible = visible_accounts(request.user)
    accounts = visible
    filters = {
        "status": request.GET.get("status", ""),
        "purpose": request.GET.get("purpose", ""),
        "owner": request.GET.get("owner", ""),
    }
    if filters["status"] in AccountStatus.values:
        accounts = accounts.filter(status=filters["status"])
    if filters["purpose"] in Purpose.values:
        accounts = accounts.filter(purpose=filters["purpose"])
    if filters["owner"]:
        accounts = accounts.filter(owner__username=filters["owner"])
    latest = PipelineRun.objects.filter(account=OuterRef("pk")).order_by("-created_at", "-id")
    accounts = accounts.annotate(latest_run_id=Subquery(latest.values("pk")[:1])).order_by("name")
    page_obj = Paginator(accounts, DASHBOARD_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page_obj.object_list)
    runs = PipelineRun.objects.in_bulk([a.latest_run_id for a in rows if a.latest_run_id])
    for account in rows:
        account.latest_run = runs.get(account.latest_run_id)
    owners: list[str] = []
    if permissions.is_approver(request.user):
        owners = list(
            get_user_model()
            .objects.filter(accounts__in=visible)
            .distinct()
            .order_by("username")
            .values_list("username", flat=True)
        )
    kept = urlencode({k: v for k, v in filters.items() if v})
    return page(
        request,
        "accounts/dashboard.html",
        {
            "accounts": rows,
            "page_obj": page_obj,
            "filters": filters,
            "filter_query": kept,
            "statuses": AccountStatus.choices,
            "purposes": Purpose.choices,
            "owners": owners,
            "filtered": any(filters.values()),
        },
    )


# --- the request form --------------------------------------------------------------------


def _require_requester(request: HttpRequest) -> None:
    if not permissions.can_request(request.user):
        raise PermissionDenied("only requesters may ask for accounts")


@require_GET
@login_required
def request_pick(request: HttpRequest) -> HttpResponse:
    _require_requester(request)
    blueprints: list[Blueprint] = []
    broken: list[str] = []
    try:
        blueprints = list_blueprints()
    except BlueprintError as exc:
        broken.append(str(exc))
    return page(request, "accounts/request_pick.html", {"blueprints": blueprints, "broken": broken})


@login_required
def request_form(request: HttpRequest, blueprint: str) -> HttpResponse:
    _require_requester(request)
    try:
        loaded = load_blueprint(blueprint)
    except BlueprintError as exc:
        raise Http404(str(exc)) from exc
    has_name_key = ACCOUNT_NAME_KEY in (loaded.parameters.get("properties") or {})
    exclude = (ACCOUNT_NAME_KEY,) if has_name_key else ()
    context: dict[str, Any] = {"blueprint": loaded, "preview": None, "preview_error": ""}

    if request.method == "GET":
        context["meta"] = RequestMetaForm(blueprint=loaded)
        context["config_form"] = SchemaForm(loaded.parameters, exclude=exclude)
        return page(request, "accounts/request_form.html", context)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})

    meta = RequestMetaForm(request.POST, blueprint=loaded)
    config_form = SchemaForm(loaded.parameters, data=request.POST, exclude=exclude)
    context.update(meta=meta, config_form=config_form)
    if config_form.added_row:
        # "Add a service": the same page with one more row, no errors shown yet.
        return page(request, "accounts/request_form.html", context)

    meta_ok = meta.is_valid()
    name = meta.cleaned_data.get("name", "")
    extra = {ACCOUNT_NAME_KEY: name} if has_name_key else None
    config_ok = config_form.is_valid(extra)
    if "name" not in meta.errors:  # one message is enough when the name is already refused
        for message in config_form.excluded_errors.get(ACCOUNT_NAME_KEY, []):
            meta.add_error("name", message)

    if "preview" in request.POST:
        if config_ok:
            context["preview"], context["preview_error"] = _preview(
                loaded, meta, config_form.config
            )
        status = 200 if config_ok else 400
        return page(request, "accounts/request_form.html", context, status=status)

    if not (meta_ok and config_ok and not meta.errors):
        return page(request, "accounts/request_form.html", context, status=400)
    expires_on = meta.cleaned_data.get("expires_on")
    try:
        account, req = services.request_account(
            user=acting_user(request),
            name=meta.cleaned_data["name"],
            blueprint=loaded.name,
            purpose=meta.cleaned_data["purpose"],
            config=config_form.config,
            expires_at=expiry_datetime(expires_on) if expires_on else None,
            reason=meta.cleaned_data.get("reason", ""),
        )
    except services.RequestInvalid as exc:
        _show_request_errors(exc, meta, config_form)
        return page(request, "accounts/request_form.html", context, status=400)
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
        return page(request, "accounts/request_form.html", context, status=409)
    if req.status == RequestStatus.PENDING:
        messages.success(request, f"Requested {account.name}: it waits for an approver.")
    else:
        messages.success(request, f"{account.name} is approved and being built.")
    return redirect("account-detail", account_id=account.pk)


def _show_request_errors(
    exc: services.RequestInvalid, meta: RequestMetaForm, config_form: SchemaForm
) -> None:
    for path, path_messages in exc.errors_by_path.items():
        for message in path_messages:
            config_form.add_error(path, message)
    for message in config_form.excluded_errors.pop(ACCOUNT_NAME_KEY, []):
        meta.add_error("name", message)
    for field_name, field_messages in exc.errors.items():
        if field_name == "config" and exc.errors_by_path:
            continue  # already shown next to each field
        for message in field_messages:
            target = SERVICE_FIELD_NAMES.get(field_name)
            if target:
                meta.add_error(target, message)
            else:
                config_form.non_field_errors.append(message)


def _preview(
    blueprint: Blueprint, meta: RequestMetaForm, config: dict[str, Any]
) -> tuple[list[tuple[str, str]] | None, str]:
    """The Terraform files this request would render to, or an error message."""
    from pipelines.rendering import RenderError, render_blueprint
    from pipelines.stages.render import template_context

    entered = getattr(meta, "cleaned_data", {})
    try:
        filled = blueprint.validate_config(config)
        context = template_context(
            blueprint,
            filled,
            account_name=entered.get("name") or config.get(ACCOUNT_NAME_KEY) or "preview",
            purpose=entered.get("purpose") or "demo",
        )
        result = render_blueprint(blueprint.terraform_dir, context, None)
    except ConfigInvalid as exc:
        return None, str(exc)
    except RenderError as exc:
        return None, f"the blueprint does not render: {exc}"
    files = [(path, raw.decode("utf-8", errors="replace")) for path, raw in result.files.items()]
    return files, ""


# --- approvals ---------------------------------------------------------------------------


@require_GET
@login_required
def approvals(request: HttpRequest) -> HttpResponse:
    if not permissions.can_decide(request.user):
        raise PermissionDenied("only approvers decide requests and plans")
    pending = list(
        AccountRequest.objects.filter(status=RequestStatus.PENDING)
        .select_related("account", "requested_by")
        .order_by("created_at", "id")
    )
    requests = [
        {"req": req, "config_items": [(k, pretty(v)) for k, v in sorted(req.config.items())]}
        for req in pending
    ]
    waiting = list(
        StageRun.objects.filter(status=StageStatus.WAITING_APPROVAL)
        .select_related("run__account__owner")
        .order_by("queued_at", "id")
    )
    plans = {
        stage.run_id: stage.outputs
        for stage in StageRun.objects.filter(run_id__in=[s.run_id for s in waiting], kind="plan")
        .order_by("position")
        .only("run_id", "outputs")
    }
    plans_waiting = [
        {
            "stage": stage,
            "summary": plan_summary(stage.outputs) or plan_summary(plans.get(stage.run_id)),
        }
        for stage in waiting
    ]
    return page(request, "accounts/approvals.html", {"pending": requests, "waiting": plans_waiting})


def _decidable_request(request: HttpRequest, request_id: int) -> AccountRequest:
    req = get_object_or_404(AccountRequest.objects.select_related("account"), pk=request_id)
    if not permissions.can_view_account(request.user, req.account):
        raise Http404("no such request")
    if not permissions.can_decide(request.user):
        raise PermissionDenied("only approvers decide requests")
    return req


@require_POST
@login_required
def request_approve(request: HttpRequest, request_id: int) -> HttpResponse:
    req = _decidable_request(request, request_id)
    try:
        req, run = services.approve_request(
            req,
            user=acting_user(request),
            comment=request.POST.get("comment", ""),
        )
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Approved {req.account.name}: run #{run.pk} started.")
    return HttpResponseRedirect(safe_next(request, reverse("approvals")))


@require_POST
@login_required
def request_reject(request: HttpRequest, request_id: int) -> HttpResponse:
    req = _decidable_request(request, request_id)
    try:
        services.reject_request(
            req,
            user=acting_user(request),
            comment=request.POST.get("comment", ""),
        )
    except services.RequestInvalid as exc:
        messages.error(request, "; ".join(m for msgs in exc.errors.values() for m in msgs))
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rejected the request for {req.account.name}.")
    return HttpResponseRedirect(safe_next(request, reverse("approvals")))


# --- the account page ---------------------------------------------------------------------


def visible_account(request: HttpRequest, account_id: int) -> Account:
    """The account, or 404 for anyone who may not see it (no hint that it exists)."""
    account = get_object_or_404(Account.objects.select_related("owner"), pk=account_id)
    if not permissions.can_view_account(request.user, account):
        raise Http404("no such account")
    return account


@require_GET
@login_required
def account_detail(request: HttpRequest, account_id: int) -> HttpResponse:
    account = visible_account(request, account_id)
    runs = list(
        PipelineRun.objects.filter(account=account)
        .select_related("created_by")
        .order_by("-created_at", "-id")[:ACCOUNT_RUNS_SHOWN]
    )
    requests = list(
        account.requests.select_related("requested_by", "decided_by").order_by("-created_at")[:5]
    )
    plan_stage = (
        StageRun.objects.filter(run__account=account, kind="plan", status=StageStatus.SUCCEEDED)
        .select_related("run")
        .order_by("-run__created_at", "-run_id")
        .first()
    )
    outputs = [
        {
            "name": name,
            "sensitive": bool(out.get("sensitive")) if isinstance(out, dict) else False,
            "value": ""
            if isinstance(out, dict) and out.get("sensitive")
            else pretty(out.get("value") if isinstance(out, dict) else out),
        }
        for name, out in sorted((account.outputs or {}).items())
    ]
    active = next((r for r in runs if r.is_active), None)
    try:
        has_databases = bool(load_blueprint(account.blueprint).databases)
    except BlueprintError:
        has_databases = False
    return page(
        request,
        "accounts/account.html",
        {
            "account": account,
            "config_items": [(k, pretty(v)) for k, v in sorted((account.config or {}).items())],
            "outputs": outputs,
            "endpoints": [(k, pretty(v)) for k, v in sorted((account.endpoints or {}).items())],
            "runs": runs,
            "requests": requests,
            "plan_stage": plan_stage,
            "plan": plan_summary(plan_stage.outputs) if plan_stage else None,
            "active_run": active,
            "can_start_run": permissions.can_start_run(request.user, account)
            and active is None
            and account.status not in NO_RUN_STATUSES,
            "has_databases": has_databases,
            "can_decide": permissions.can_decide(request.user),
        },
    )


@require_POST
@login_required
def account_start_run(request: HttpRequest, account_id: int) -> HttpResponse:
    from pipelines.services import RunConflict, RunRefused

    account = visible_account(request, account_id)
    if not permissions.can_start_run(request.user, account):
        raise PermissionDenied("you may not start runs on this account")
    kind = request.POST.get("kind", RunKind.UPDATE)
    if kind == RunKind.TEARDOWN and not request.POST.get("confirm"):
        # Works without JavaScript: the form's checkbox is the confirmation.
        messages.error(request, f"Tick the box to confirm that {account.name} is to be torn down.")
        return redirect("account-detail", account_id=account.pk)
    try:
        run = services.start_account_run(account, kind, user=acting_user(request))
    except RunConflict as exc:
        messages.error(request, str(exc))
        return redirect("run-detail", run_id=exc.holder_id)
    except (RunRefused, services.RequestRefused) as exc:
        messages.error(request, str(exc))
        return redirect("account-detail", account_id=account.pk)
    messages.success(request, f"Started {run.get_kind_display().lower()} run #{run.pk}.")
    return redirect("run-detail", run_id=run.pk)
