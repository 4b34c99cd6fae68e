"""Web pages about accounts: dashboard, request form, approvals, account page.

Views stay thin: who may do what is decided by accounts_app.permissions, writes
go through the services, and each page runs a fixed number of queries however
many accounts, runs or requests it shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
    expiry,
    lifecycle,
    parity,
    permissions,
    request_actions,
    selectors,
    services,
    updates,
)
from accounts_app.forms import (
    PURPOSE_CHANGED,
    SERVICE_FIELD_NAMES,
    RequestMetaForm,
    SchemaForm,
    expiry_datetime,
    production_locks,
    with_values,
)
from accounts_app.models import Account, AccountRequest, AccountStatus, Purpose, RequestStatus

# A blueprint that still declares account_name gets it filled from the name field.
from pipelines.blueprints import ACCOUNT_NAME_KEY, Blueprint
from pipelines.models import PipelineRun, RunKind
from pipelines.selectors import latest_plan
from pipelines.services import RunConflict
from portal import lookups
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
    accounts = selectors.searched_and_sorted(accounts, search=filters["q"], sort=filters["sort"])
    # The page of ids first (no joins for the rows a deep page skips), then its rows.
    page_obj = Paginator(accounts.values_list("pk", flat=True), DASHBOARD_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    rows = selectors.account_rows(list(page_obj.object_list))
    owners = selectors.owner_names(visible) if permissions.is_approver(request.user) else []
    kept = urlencode({k: v for k, v in filters.items() if v})
    return page(
        request,
        "accounts/dashboard.html",
        {
            "rows": rows,
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
    context: dict[str, Any] = {
        "blueprint": loaded,
        "preview": None,
        "preview_error": "",
        "held_purposes": parity.purposes_held_to_production(loaded),
    }

    if request.method == "GET":
        meta = RequestMetaForm(blueprint=loaded, initial={"purpose": request.GET.get("purpose")})
        locks, initial = production_locks(
            parity.production_values(blueprint=loaded, purpose=meta.chosen_purpose)
        )
        context["meta"] = meta
        context["config_form"] = SchemaForm(
            loaded.parameters, initial=initial, exclude=exclude, locks=locks
        )
        return page(request, "accounts/request_form.html", context)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})

    meta = RequestMetaForm(request.POST, blueprint=loaded)
    locks, production = production_locks(
        parity.production_values(blueprint=loaded, purpose=meta.chosen_purpose)
    )
    config_form = SchemaForm(loaded.parameters, data=request.POST, exclude=exclude, locks=locks)
    context.update(meta=meta, config_form=config_form)
    if PURPOSE_CHANGED in request.POST:
        # The purpose changed: the same values, with production's where the purpose asks.
        context["meta"] = RequestMetaForm(blueprint=loaded, initial=request.POST.dict())
        context["config_form"] = SchemaForm(
            loaded.parameters,
            initial=with_values(config_form.config, production),
            exclude=exclude,
            locks=locks,
        )
        return page(request, "accounts/request_form.html", context)
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

    form_ok = meta_ok and config_ok and not meta.errors
    if not form_ok:
        # Every problem at once: the request's own checks (expiry, quota, production's
        # values) join the form's, as they would on a submit.
        _check_request(request=request, blueprint=loaded, meta=meta, config_form=config_form)

    if "preview" in request.POST:
        if config_ok:
            if form_ok:  # Preview shows the request's problems too, before it is submitted
                _check_request(
                    request=request, blueprint=loaded, meta=meta, config_form=config_form
                )
            context["preview"], context["preview_error"] = _preview(
                blueprint=loaded, meta=meta, config=config_form.config
            )
        status = 200 if config_ok else 400
        return page(request, "accounts/request_form.html", context, status=status)

    if not form_ok:
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


def _check_request(
    *, request: HttpRequest, blueprint: Blueprint, meta: RequestMetaForm, config_form: SchemaForm
) -> None:
    """The service's checks of what was entered (nothing is written), shown on the form.

    Its config problems are left out while the form has its own: they come from a
    config with the refused values missing, and would only repeat them.
    """
    entered = getattr(meta, "cleaned_data", {})
    expires_on = entered.get("expires_on")
    try:
        services.check_request(
            user=acting_user(request),
            name=entered.get("name", meta.data.get("name", "")),
            blueprint=blueprint.name,
            purpose=entered.get("purpose", meta.data.get("purpose", "")),
            config=config_form.config,
            expires_at=expiry_datetime(expires_on) if expires_on else None,
        )
    except services.RequestInvalid as exc:
        _show_request_errors(
            exc=exc, meta=meta, config_form=config_form, with_config=not config_form.has_errors
        )


def _show_request_errors(
    *,
    exc: services.RequestInvalid,
    meta: RequestMetaForm,
    config_form: SchemaForm,
    with_config: bool = True,
) -> None:
    if with_config:
        for path, path_messages in exc.errors_by_path.items():
            for message in path_messages:
                config_form.add_error(path, message)
        for message in config_form.excluded_errors.pop(ACCOUNT_NAME_KEY, []):
            meta.add_error("name", message)
    for field_name, field_messages in exc.errors.items():
        if field_name == "config" and (exc.errors_by_path or not with_config):
            continue  # already shown next to each field
        target = SERVICE_FIELD_NAMES.get(field_name)
        if target and target in meta.errors:
            continue  # the form already says what is wrong with it
        for message in field_messages:
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
            account_name=entered.get("name") or "preview",
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
    return page(
        request,
        "accounts/approvals.html",
        {"pending": requests, "waiting": waiting, "extensions": expiry.pending_extensions()},
    )


def _decidable_request(request: HttpRequest, request_id: int) -> AccountRequest:
    req = lookups.visible_request(user=request.user, request_id=request_id)
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


@require_POST
@login_required
def request_withdraw(request: HttpRequest, request_id: int) -> HttpResponse:
    req = lookups.own_request(user=request.user, request_id=request_id)
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
    req = lookups.own_request(user=request.user, request_id=request_id)
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


@require_GET
@login_required
def account_detail(request: HttpRequest, account_id: int) -> HttpResponse:
    account = lookups.visible_account(user=request.user, account_id=account_id)
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
            "can_edit": permissions.can_edit(user=request.user, account=account)
            and active is None
            and (account.status in updates.UPDATABLE_STATUSES),
            "upgrade_to": updates.upgrade_available(account),
            "can_upgrade_all": permissions.can_upgrade_all(request.user),
            "has_databases": selectors.has_databases(account),
            "can_decide": permissions.can_decide(request.user),
            "parity": report.report if report else None,
            "parity_checks": [
                {**c, "clone": pretty(c["clone"]), "production": pretty(c["production"])}
                for c in (parity.checks_differing_first(report.report) if report else [])
            ],
            **lifecycle.account_page_facts(user=request.user, account=account),
        },
    )


@require_POST
@login_required
def account_parity_check(request: HttpRequest, account_id: int) -> HttpResponse:
    """Compare the account with its production now (whoever may see it may ask)."""
    account = lookups.visible_account(user=request.user, account_id=account_id)
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
    account = lookups.visible_account(user=request.user, account_id=account_id)
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


# --- editing and upgrading ----------------------------------------------------------------------


def diff_rows(plan: updates.UpdatePlan) -> list[dict[str, Any]]:
    """The diff for a page: per file its path, change and lines with a class each."""
    rows = []
    for found in plan.files:
        lines = []
        for line in found.diff.splitlines():
            if line.startswith(("+++", "---")):
                kind = "head"
            elif line.startswith("@@"):
                kind = "hunk"
            elif line.startswith("+"):
                kind = "add"
            elif line.startswith("-"):
                kind = "del"
            else:
                kind = "same"
            lines.append((kind, line))
        rows.append({"path": found.path, "change": found.change, "lines": lines})
    return rows


def _update_context(plan: updates.UpdatePlan) -> dict[str, Any]:
    return {"plan": plan, "diff": diff_rows(plan), "reviewed": plan.digest()}


@login_required
def account_edit(request: HttpRequest, account_id: int) -> HttpResponse:
    """The request form, pre-filled: review the diff, then start the update run."""
    account = lookups.editable_account(user=request.user, account_id=account_id)
    loaded = selectors.blueprint_named(account.blueprint)
    if loaded is None:
        raise Http404("the account's blueprint is gone")
    has_name_key = ACCOUNT_NAME_KEY in (loaded.parameters.get("properties") or {})
    exclude = (ACCOUNT_NAME_KEY,) if has_name_key else ()
    context: dict[str, Any] = {"account": account, "blueprint": loaded, "plan": None}
    if request.method == "GET":
        context["config_form"] = SchemaForm(
            loaded.parameters, initial=account.config, exclude=exclude
        )
        return page(request, "accounts/edit.html", context)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    config_form = SchemaForm(loaded.parameters, data=request.POST, exclude=exclude)
    context["config_form"] = config_form
    if config_form.added_row:
        return page(request, "accounts/edit.html", context)
    if not config_form.is_valid({ACCOUNT_NAME_KEY: account.name} if has_name_key else None):
        return page(request, "accounts/edit.html", context, status=400)
    try:
        plan = updates.plan_update(account=account, config=config_form.config)
    except services.RequestInvalid as exc:
        _show_update_errors(exc=exc, config_form=config_form)
        return page(request, "accounts/edit.html", context, status=400)
    except PortalError as exc:
        show_error(request, exc)
        return redirect("account-detail", account_id=account.pk)
    context.update(_update_context(plan))
    if "start" not in request.POST:
        return page(request, "accounts/edit.html", context)
    if request.POST.get("reviewed") != plan.digest():
        messages.error(request, "The changes differ from those you reviewed: review them again.")
        return page(request, "accounts/edit.html", context, status=409)
    return _start_update(
        request,
        account=account,
        action=lambda: updates.update_account(
            account=account, user=acting_user(request), config=config_form.config
        ),
    )


def _show_update_errors(*, exc: services.RequestInvalid, config_form: SchemaForm) -> None:
    for path, path_messages in exc.errors_by_path.items():
        for message in path_messages:
            config_form.add_error(path, message)
    if not exc.errors_by_path:
        config_form.non_field_errors.extend(m for msgs in exc.errors.values() for m in msgs)


def _start_update(
    request: HttpRequest,
    *,
    account: Account,
    action: Callable[[], tuple[updates.UpdatePlan, PipelineRun | None]],
) -> HttpResponse:
    try:
        _, run = action()
    except RunConflict as exc:
        show_error(request, exc)
        return redirect("run-detail", run_id=exc.holder_id)
    except PortalError as exc:
        show_error(request, exc)
        return redirect("account-detail", account_id=account.pk)
    if run is None:
        messages.success(request, f"Production {account.name}: registration updated.")
        return redirect("account-detail", account_id=account.pk)
    messages.success(request, f"Started update run #{run.pk}.")
    return redirect("run-detail", run_id=run.pk)


@login_required
def account_upgrade(request: HttpRequest, account_id: int) -> HttpResponse:
    """The diff of an upgrade to the blueprint's newer version, then the update run."""
    account = lookups.editable_account(user=request.user, account_id=account_id)
    if request.method not in ("GET", "POST"):
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    version = updates.upgrade_available(account)
    if version is None:
        messages.error(request, f"{account.name} is at its blueprint's version already.")
        return redirect("account-detail", account_id=account.pk)
    try:
        plan = updates.plan_update(account=account)
    except PortalError as exc:
        show_error(request, exc)
        return redirect("account-detail", account_id=account.pk)
    context = {"account": account, "version": version, **_update_context(plan)}
    if request.method == "GET":
        return page(request, "accounts/upgrade.html", context)
    if request.POST.get("reviewed") != plan.digest():
        messages.error(request, "The changes differ from those you reviewed: review them again.")
        return page(request, "accounts/upgrade.html", context, status=409)
    user = acting_user(request)
    return _start_update(
        request,
        account=account,
        action=lambda: updates.upgrade_account(account=account, user=user),
    )


@login_required
def blueprint_upgrade(request: HttpRequest, blueprint: str) -> HttpResponse:
    """Admins: upgrade every out-of-date account of a blueprint, one update run each."""
    if not permissions.can_upgrade_all(request.user):
        raise PermissionDenied("only admins upgrade every account of a blueprint")
    loaded = selectors.blueprint_named(blueprint)
    if loaded is None:
        raise Http404("no such blueprint")
    if request.method == "POST":
        results = updates.upgrade_all(blueprint_name=loaded.name, user=acting_user(request))
        started = [r for r in results if r.run is not None]
        messages.success(
            request, f"Started {len(started)} update run(s) to {loaded.name} {loaded.version}."
        )
        for result in results:
            if result.problem:
                messages.error(request, f"{result.account.name}: {result.problem}")
        return redirect("blueprint-upgrade", blueprint=loaded.name)
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    accounts = updates.upgradable_accounts(loaded.name)
    rows = [{"account": a, "version": parity.built_version(a)} for a in accounts]
    return page(request, "accounts/blueprint_upgrade.html", {"blueprint": loaded, "rows": rows})
