"""Web pages about accounts: dashboard, request form, approvals, account page.

Views stay thin: who may do what is decided by accounts_app.permissions, writes
go through the services, and each page runs a fixed number of queries however
many accounts, runs or requests it shows.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts_app import (
    decommission,
    parity,
    permissions,
    request_actions,
    selectors,
    services,
)
from accounts_app.forms import (
    ACCOUNT_NAME_KEY,
    SERVICE_FIELD_NAMES,
    RequestMetaForm,
    SchemaForm,
    expiry_datetime,
)
from accounts_app.models import Account, AccountRequest, AccountStatus, Purpose, RequestStatus
from pipelines.blueprints import Blueprint
from pipelines.models import RunKind
from pipelines.selectors import latest_plan
from pipelines.services import RunConflict
from portal.errors import PortalError
from portal.web_errors import attempt, show_error

DASHBOARD_PAGE_SIZE = 25
# Accounts on which the account page offers no run buttons.
NO_RUN_STATUSES = (AccountStatus.REQUESTED, AccountStatus.REJECTED, AccountStatus.TORN_DOWN)
ACCOUNT_RUNS_SHOWN = 20
ACCOUNT_REQUESTS_SHOWN = 5


def page(
    request: HttpRequest, template: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """Render a page with the role flags the layout needs (navigation, buttons)."""
    roles: dict[str, Any] = {**permissions.roles_for_templates(request.user)}
    if roles["can_decide"]:
        roles["approvals_waiting"] = selectors.approvals_waiting_count()
    context = {**roles, **context}
    return render(request, template, context, status=status)


def acting_user(request: HttpRequest) -> User:
    """The logged-in user as a real model instance (services look at ``type(user)``)."""
    user = request.user
    _ = user.pk  # evaluates the lazy object
    real = getattr(user, "_wrapped", user)
    assert isinstance(real, User), "login_required views only"
    return real


def safe_next(request: HttpRequest, *, fallback: str) -> str:
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


# --- dashboard ---------------------------------------------------------------------------


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    visible = selectors.visible_accounts(request.user)
    filters = {
        "status": request.GET.get("status", ""),
        "purpose": request.GET.get("purpose", ""),
        "owner": request.GET.get("owner", ""),
        "parity": request.GET.get("parity", ""),
        "q": request.GET.get("q", "").strip()[:100],
        "sort": request.GET.get("sort", ""),
    }
    # Unknown values are ignored here (a page keeps working), where the API answers 400.
    accounts = selectors.filter_accounts(
        visible,
        status=filters["status"] if filters["status"] in AccountStatus.values else None,
        purpose=filters["purpose"] if filters["purpose"] in Purpose.values else None,
        owner=filters["owner"] or None,
    )
    accounts = selectors.with_parity(accounts, out_of_parity=filters["parity"] == "out")
    accounts = selectors.searched_and_sorted(
        selectors.with_latest_run_id(accounts), search=filters["q"], sort=filters["sort"]
    )
    page_obj = Paginator(accounts, DASHBOARD_PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page_obj.object_list)
    runs = selectors.latest_runs(rows)
    for account in rows:
        account.latest_run = runs.get(account.pk)
    owners = selectors.owner_names(visible) if permissions.is_approver(request.user) else []
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
            "sorts": [
                ("", "Name"),
                ("-created", "Newest"),
                ("expires", "Expiring first"),
                ("status", "Status"),
            ],
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
    blueprints, broken = selectors.requestable_blueprints()
    return page(request, "accounts/request_pick.html", {"blueprints": blueprints, "broken": broken})


@login_required
def request_form(request: HttpRequest, blueprint: str) -> HttpResponse:
    _require_requester(request)
    loaded = selectors.blueprint_named(blueprint)
    if loaded is None:
        raise Http404("no such blueprint")
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
                blueprint=loaded, meta=meta, config=config_form.config
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
        _show_request_errors(exc=exc, meta=meta, config_form=config_form)
        return page(request, "accounts/request_form.html", context, status=400)
    except PortalError as exc:
        show_error(request, exc)
        return page(request, "accounts/request_form.html", context, status=409)
    if req.status == RequestStatus.PENDING:
        messages.success(request, f"Requested {account.name}: it waits for an approver.")
    else:
        messages.success(request, f"{account.name} is approved and being built.")
    return redirect("account-detail", account_id=account.pk)


def _show_request_errors(
    *, exc: services.RequestInvalid, meta: RequestMetaForm, config_form: SchemaForm
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
    *, blueprint: Blueprint, meta: RequestMetaForm, config: dict[str, Any]
) -> tuple[list[tuple[str, str]] | None, str]:
    """The Terraform files this request would render to, or an error message."""
    entered = getattr(meta, "cleaned_data", {})
    try:
        files = services.preview_files(
            blueprint=blueprint,
            config=config,
            account_name=entered.get("name") or config.get(ACCOUNT_NAME_KEY) or "preview",
            purpose=entered.get("purpose") or Purpose.DEMO,
        )
    except services.RequestInvalid as exc:
        return None, exc.message
    return [(path, raw.decode("utf-8", errors="replace")) for path, raw in files.items()], ""


# --- approvals ---------------------------------------------------------------------------


@require_GET
@login_required
def approvals(request: HttpRequest) -> HttpResponse:
    if not permissions.can_decide(request.user):
        raise PermissionDenied("only approvers decide requests and plans")
    requests = [
        {"req": req, "config_items": [(k, pretty(v)) for k, v in sorted(req.config.items())]}
        for req in selectors.pending_requests()
    ]
    waiting = selectors.plans_waiting()
    return page(request, "accounts/approvals.html", {"pending": requests, "waiting": waiting})


def _decidable_request(request: HttpRequest, request_id: int) -> AccountRequest:
    req = selectors.visible_request(user=request.user, request_id=request_id)
    if req is None:
        raise Http404("no such request")
    if not permissions.can_decide(request.user):
        raise PermissionDenied("only approvers decide requests")
    return req


def _decide_request(request: HttpRequest, request_id: int, *, approve: bool) -> HttpResponse:
    req = _decidable_request(request, request_id)
    user, comment = acting_user(request), request.POST.get("comment", "")
    if approve:
        attempt(
            request,
            action=lambda: services.approve_request(
                account_request=req, user=user, comment=comment
            ),
            success=lambda done: f"Approved {done[0].account.name}: run #{done[1].pk} started.",
        )
    else:
        attempt(
            request,
            action=lambda: services.reject_request(account_request=req, user=user, comment=comment),
            success=lambda done: f"Rejected the request for {done.account.name}.",
        )
    return HttpResponseRedirect(safe_next(request, fallback=reverse("approvals")))


@require_POST
@login_required
def request_approve(request: HttpRequest, request_id: int) -> HttpResponse:
    return _decide_request(request, request_id, approve=True)


@require_POST
@login_required
def request_reject(request: HttpRequest, request_id: int) -> HttpResponse:
    return _decide_request(request, request_id, approve=False)


def _own_request(request: HttpRequest, request_id: int) -> AccountRequest:
    req = selectors.visible_request(user=request.user, request_id=request_id)
    if req is None:
        raise Http404("no such request")
    if not permissions.can_change_request(user=request.user, account_request=req):
        raise PermissionDenied("only the requester may withdraw or send again a request")
    return req


@require_POST
@login_required
def request_withdraw(request: HttpRequest, request_id: int) -> HttpResponse:
    req = _own_request(request, request_id)
    attempt(
        request,
        action=lambda: request_actions.withdraw_request(
            account_request=req, user=acting_user(request)
        ),
        success=lambda done: f"Withdrew the request for {done.account.name}.",
    )
    return redirect("account-detail", account_id=req.account_id)


@require_POST
@login_required
def request_resubmit(request: HttpRequest, request_id: int) -> HttpResponse:
    """Send a rejected request again; its config is edited with ``config`` (YAML or JSON)."""
    req = _own_request(request, request_id)
    text = request.POST.get("config", "").strip()

    def resubmit() -> AccountRequest:
        config = request_actions.config_from_text(text) if text else None
        return request_actions.resubmit_request(
            account_request=req,
            user=acting_user(request),
            config=config,
            reason=request.POST.get("reason", ""),
        )

    attempt(
        request,
        action=resubmit,
        success=lambda again: f"Sent the request for {again.account.name} again.",
    )
    return redirect("account-detail", account_id=req.account_id)


# --- the account page ---------------------------------------------------------------------


def visible_account(request: HttpRequest, account_id: int) -> Account:
    """The account, or 404 for anyone who may not see it (no hint that it exists)."""
    account = selectors.visible_account(user=request.user, account_id=account_id)
    if account is None:
        raise Http404("no such account")
    return account


@require_GET
@login_required
def account_detail(request: HttpRequest, account_id: int) -> HttpResponse:
    account = visible_account(request, account_id)
    runs = selectors.recent_runs(account=account, limit=ACCOUNT_RUNS_SHOWN)
    plan = latest_plan(account.pk)
    outputs = [
        {
            "name": name,
            "sensitive": shown["sensitive"],
            "value": "" if shown["sensitive"] else pretty(shown["value"]),
        }
        for name, shown in selectors.public_outputs(account).items()
    ]
    active = next((r for r in runs if r.is_active), None)
    report = parity.latest_report(account)
    requests = list(selectors.recent_requests(account=account, limit=ACCOUNT_REQUESTS_SHOWN))
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
            "resubmit_config": yaml.safe_dump(requests[0].config, sort_keys=True)
            if requests
            else "",
            "plan_stage": plan[0] if plan else None,
            "plan": plan[1] if plan else None,
            "active_run": active,
            "can_start_run": permissions.can_start_run(user=request.user, account=account)
            and active is None
            and account.status not in NO_RUN_STATUSES,
            "has_databases": selectors.has_databases(account),
            "can_decide": permissions.can_decide(request.user),
            "parity": report.report if report else None,
            "parity_checks": [
                {**c, "clone": pretty(c["clone"]), "production": pretty(c["production"])}
                for c in (parity.checks_differing_first(report.report) if report else [])
            ],
        },
    )


@require_POST
@login_required
def account_parity_check(request: HttpRequest, account_id: int) -> HttpResponse:
    """Compare the account with its production now (whoever may see it may ask)."""
    account = visible_account(request, account_id)
    try:
        report = parity.compute_report(account=account)
    except PortalError as exc:
        show_error(request, exc)
    else:
        verdict = "in parity" if report.in_parity else "out of parity"
        messages.success(request, f"Parity checked: {account.name} is {verdict}.")
    return redirect("account-detail", account_id=account.pk)


@require_POST
@login_required
def account_start_run(request: HttpRequest, account_id: int) -> HttpResponse:
    account = visible_account(request, account_id)
    if not permissions.can_start_run(user=request.user, account=account):
        raise PermissionDenied("you may not start runs on this account")
    kind = request.POST.get("kind", RunKind.UPDATE)
    try:
        if kind == RunKind.TEARDOWN:
            # The typed name is the confirmation (works without JavaScript).
            run = decommission.request_teardown(
                account=account,
                user=acting_user(request),
                confirm=request.POST.get("confirm", ""),
                reason=request.POST.get("reason", ""),
            )
        else:
            run = services.start_account_run(account=account, kind=kind, user=acting_user(request))
    except RunConflict as exc:
        show_error(request, exc)
        return redirect("run-detail", run_id=exc.holder_id)
    except PortalError as exc:
        show_error(request, exc)
        return redirect("account-detail", account_id=account.pk)
    messages.success(request, f"Started {run.get_kind_display().lower()} run #{run.pk}.")
    return redirect("run-detail", run_id=run.pk)
