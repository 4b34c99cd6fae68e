"""Account pages for life after creation: extend, exempt, check drift, reconcile,
and the approvers' decisions on extensions. Thin: the work is in
``accounts_app.expiry`` and ``accounts_app.drift``; who may do what in ``permissions``.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts_app import drift, expiry, permissions
from accounts_app.forms import expiry_datetime
from accounts_app.models import Account, RequestStatus
from accounts_app.views import acting_user, safe_next
from pipelines.services import RunConflict
from portal import lookups
from portal.errors import PortalError
from portal.web_errors import attempt, show_error


class ExtendForm(forms.Form):
    expires_on = forms.DateField(
        label="Extend to", widget=forms.DateInput(attrs={"type": "date"}), required=True
    )
    reason = forms.CharField(label="Reason", max_length=5000, required=False)


@require_POST
@login_required
def account_extend(request: HttpRequest, account_id: int) -> HttpResponse:
    account = lookups.visible_account(user=request.user, account_id=account_id)
    if not permissions.can_start_run(user=request.user, account=account):
        raise PermissionDenied("only the owner or an admin may extend this account")
    form = ExtendForm(request.POST)
    if not form.is_valid():
        for field, problems in form.errors.items():
            label = form.fields[field].label if field in form.fields else field
            messages.error(request, f"{label}: {' '.join(str(p) for p in problems)}")
        return redirect(reverse("account-detail", args=[account.pk]) + "#expiry")
    wanted = expiry_datetime(form.cleaned_data["expires_on"])
    attempt(
        request,
        action=lambda: expiry.extend(
            account=account,
            user=acting_user(request),
            expires_at=wanted,
            reason=form.cleaned_data["reason"],
        ),
        success=lambda done: (
            f"Extension #{done.pk} beyond the policy's limit waits for an approver."
            if done.status == RequestStatus.PENDING
            else f"Extended {account.name} to {done.expires_at:%Y-%m-%d %H:%M} UTC."
        ),
    )
    return redirect(reverse("account-detail", args=[account.pk]) + "#expiry")


@require_POST
@login_required
def account_exempt(request: HttpRequest, account_id: int) -> HttpResponse:
    account = lookups.visible_account(user=request.user, account_id=account_id)
    if not permissions.is_admin(request.user):
        raise PermissionDenied("only admins may exempt accounts from expiry")
    exempt = request.POST.get("exempt") == "1"
    attempt(
        request,
        action=lambda: expiry.set_exempt(account=account, exempt=exempt),
        success=lambda done: (
            f"{done.name} is exempt from expiry."
            if done.expiry_exempt
            else f"{done.name} expires again."
        ),
    )
    return redirect(reverse("account-detail", args=[account.pk]) + "#expiry")


def _start(request: HttpRequest, account: Account, *, reconcile: bool) -> HttpResponse:
    if not permissions.can_start_run(user=request.user, account=account):
        raise PermissionDenied("you may not start runs on this account")
    user = acting_user(request)
    try:
        if reconcile:
            run = drift.reconcile(account=account, user=user)
        else:
            run = drift.start_check(account=account, user=user)
    except RunConflict as exc:
        show_error(request, exc)
        return redirect("run-detail", run_id=exc.holder_id)
    except PortalError as exc:
        show_error(request, exc)
        return redirect(reverse("account-detail", args=[account.pk]) + "#drift")
    messages.success(request, f"Started {run.get_kind_display().lower()} run #{run.pk}.")
    return redirect("run-detail", run_id=run.pk)


@require_POST
@login_required
def account_drift_check(request: HttpRequest, account_id: int) -> HttpResponse:
    return _start(
        request, lookups.visible_account(user=request.user, account_id=account_id), reconcile=False
    )


@require_POST
@login_required
def account_reconcile(request: HttpRequest, account_id: int) -> HttpResponse:
    return _start(
        request, lookups.visible_account(user=request.user, account_id=account_id), reconcile=True
    )


def _decide_extension(request: HttpRequest, extension_id: int, *, approve: bool) -> HttpResponse:
    user = acting_user(request)
    extension = lookups.visible_extension(user=user, extension_id=extension_id)
    if not permissions.can_decide(request.user):
        raise PermissionDenied("only approvers decide extensions")
    comment = request.POST.get("comment", "")
    attempt(
        request,
        action=lambda: expiry.decide_extension(
            extension=extension, user=user, approve=approve, comment=comment
        ),
        success=lambda done: (
            f"{'Approved' if approve else 'Rejected'} the extension of {done.account.name}."
        ),
    )
    return HttpResponseRedirect(safe_next(request, fallback=reverse("approvals")))


@require_POST
@login_required
def extension_approve(request: HttpRequest, extension_id: int) -> HttpResponse:
    return _decide_extension(request, extension_id, approve=True)


@require_POST
@login_required
def extension_reject(request: HttpRequest, extension_id: int) -> HttpResponse:
    return _decide_extension(request, extension_id, approve=False)
