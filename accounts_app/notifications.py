"""Notifications: e-mail (Django's mail) and a Slack-compatible webhook.

Events: a request needs approval, a request is decided, a plan waits for
approval, a run fails, a run succeeds. Callers only *queue* a notification
(``accounts_app.notification_queue``); the ``notify`` task composes the message
here from the database and hands e-mail and webhook to two more tasks, each
retried on its own with backoff.

Messages carry names, statuses, explanations and links, never config values,
outputs or secrets.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail

from accounts_app.models import (
    AccountRequest,
    DriftReport,
    ExpiryReminder,
    ExtensionRequest,
    ParityReport,
    RequestStatus,
)
from accounts_app.roles import ADMINS, APPROVERS
from pipelines.clients.terraform import PlanSummary
from pipelines.models import PipelineRun, RunKind, RunStatus, StageRun, StageStatus
from pipelines.selectors import plan_summary_of
from portal.durations import describe

logger = logging.getLogger(__name__)

REQUEST_NEEDS_APPROVAL = "request_needs_approval"
REQUEST_DECIDED = "request_decided"
PLAN_WAITING = "plan_waiting"
RUN_FINISHED = "run_finished"
PARITY_CHANGED = "parity_changed"
DRIFT_DETECTED = "drift_detected"
EXPIRY_REMINDER = "expiry_reminder"
EXTENSION_NEEDS_APPROVAL = "extension_needs_approval"
EXTENSION_DECIDED = "extension_decided"
EVENTS = (
    REQUEST_NEEDS_APPROVAL,
    REQUEST_DECIDED,
    PLAN_WAITING,
    RUN_FINISHED,
    PARITY_CHANGED,
    DRIFT_DETECTED,
    EXPIRY_REMINDER,
    EXTENSION_NEEDS_APPROVAL,
    EXTENSION_DECIDED,
)

WEBHOOK_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Message:
    subject: str
    body: str
    recipients: list[str] = field(default_factory=list)
    link: str = ""

    @property
    def webhook_text(self) -> str:
        return f"{self.subject}\n{self.link}" if self.link else self.subject


# --- composing (in the task) ------------------------------------------------------------


def url(path: str) -> str:
    return f"{settings.PORTAL_BASE_URL}{path}"


def approver_emails() -> list[str]:
    """E-mail addresses of everyone who may decide: the approvers and admins groups."""
    users = (
        get_user_model()
        ._default_manager.filter(is_active=True, groups__name__in=(APPROVERS, ADMINS))
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )
    return sorted(users)


def _email_of(user: AbstractBaseUser | None) -> list[str]:
    email = getattr(user, "email", "") if user is not None else ""
    return [email] if email else []


def compose(*, event: str, object_id: int) -> Message | None:
    """The message for an event, or None when there is nothing to say."""
    if event == REQUEST_NEEDS_APPROVAL:
        return _request_needs_approval(object_id)
    if event == REQUEST_DECIDED:
        return _request_decided(object_id)
    if event == PLAN_WAITING:
        return _plan_waiting(object_id)
    if event == RUN_FINISHED:
        return _run_finished(object_id)
    if event == PARITY_CHANGED:
        return _parity_changed(object_id)
    if event == DRIFT_DETECTED:
        return _drift_detected(object_id)
    if event == EXPIRY_REMINDER:
        return _expiry_reminder(object_id)
    if event == EXTENSION_NEEDS_APPROVAL:
        return _extension_needs_approval(object_id)
    if event == EXTENSION_DECIDED:
        return _extension_decided(object_id)
    raise ValueError(f"unknown notification event {event!r}")


def _parity_changed(report_id: int) -> Message | None:
    """To the owner: the account fell out of parity (paths only, never their values)."""
    report = ParityReport.objects.select_related("account__owner").filter(pk=report_id).first()
    if report is None or report.in_parity:
        return None
    account = report.account
    link = url(f"/accounts/{account.pk}/#parity")
    differing = [c["path"] for c in report.report.get("checks", []) if c["status"] == "differs"]
    body = "\n".join(
        [
            f"Account {account.name} is out of parity with production "
            f"{report.report.get('production', '')}.",
            "Differs: " + ", ".join(differing),
            "",
            f"See the report: {link}",
        ]
    )
    return Message(
        subject=f"[portal] {account.name} is out of parity with production",
        body=body,
        recipients=_email_of(account.owner),
        link=link,
    )


def _drift_detected(report_id: int) -> Message | None:
    """To the owner: the live state differs from the code (addresses and actions only)."""
    report = DriftReport.objects.select_related("account__owner").filter(pk=report_id).first()
    if report is None or not report.drifted:
        return None
    account = report.account
    summary = PlanSummary.from_dict(report.summary)
    link = url(f"/accounts/{account.pk}/#drift")
    changed = [f"{r.action} {r.address}" for r in summary.resources if r.action != "no-op"]
    body = "\n".join(
        [
            f"Account {account.name} has drifted: its live state no longer matches its code "
            f"(drift check, run #{report.run_id}).",
            plan_counts(summary),
            *(f"  {line}" for line in changed),
            "",
            f"Reconcile it from the account page: {link}",
        ]
    )
    return Message(
        subject=f"[portal] {account.name} has drifted from its code",
        body=body,
        recipients=_email_of(account.owner),
        link=link,
    )


def _expiry_reminder(reminder_id: int) -> Message | None:
    reminder = (
        ExpiryReminder.objects.select_related("account__owner").filter(pk=reminder_id).first()
    )
    if reminder is None:
        return None
    account = reminder.account
    if account.expires_at != reminder.expires_at or account.expiry_exempt:
        return None  # extended or exempted since: this reminder no longer holds
    link = url(f"/accounts/{account.pk}/#expiry")
    within = describe(timedelta(seconds=reminder.threshold_seconds))
    body = "\n".join(
        [
            f"Account {account.name} expires at {reminder.expires_at:%Y-%m-%d %H:%M} UTC "
            f"(in {within} or less); it is then torn down.",
            "",
            f"Extend it: {link}",
        ]
    )
    return Message(
        subject=f"[portal] {account.name} expires in {within}",
        body=body,
        recipients=_email_of(account.owner),
        link=link,
    )


def _extension_needs_approval(extension_id: int) -> Message | None:
    extension = (
        ExtensionRequest.objects.select_related("account", "requested_by")
        .filter(pk=extension_id)
        .first()
    )
    if extension is None or extension.status != RequestStatus.PENDING:
        return None
    account = extension.account
    link = url("/approvals/#extensions")
    body = "\n".join(
        [
            f"{extension.requested_by.get_username()} asks to extend account {account.name} "
            f"to {extension.expires_at:%Y-%m-%d %H:%M} UTC, beyond its policy's limit.",
            f"Reason: {extension.reason or '(none given)'}",
            "",
            f"Decide it: {link}",
        ]
    )
    return Message(
        subject=f"[portal] Extension #{extension.pk} of {account.name} needs approval",
        body=body,
        recipients=approver_emails(),
        link=link,
    )


def _extension_decided(extension_id: int) -> Message | None:
    extension = (
        ExtensionRequest.objects.select_related("account", "requested_by", "decided_by")
        .filter(pk=extension_id)
        .first()
    )
    if extension is None or extension.status not in (
        RequestStatus.APPROVED,
        RequestStatus.REJECTED,
    ):
        return None
    account = extension.account
    decision = "approved" if extension.status == RequestStatus.APPROVED else "rejected"
    who = extension.decided_by.get_username() if extension.decided_by else "the portal"
    link = url(f"/accounts/{account.pk}/#expiry")
    lines = [
        f"Your extension of {account.name} to {extension.expires_at:%Y-%m-%d %H:%M} UTC "
        f"was {decision} by {who}."
    ]
    if extension.comment:
        lines.append(f"Comment: {extension.comment}")
    lines += ["", f"Account: {link}"]
    return Message(
        subject=f"[portal] Extension #{extension.pk} of {account.name} {decision}",
        body="\n".join(lines),
        recipients=_email_of(extension.requested_by),
        link=link,
    )


def _request_needs_approval(request_id: int) -> Message | None:
    req = (
        AccountRequest.objects.select_related("account", "requested_by")
        .filter(pk=request_id)
        .first()
    )
    if req is None or req.status != RequestStatus.PENDING:
        return None  # decided meanwhile: nobody needs to act
    account = req.account
    link = url(f"/accounts/{account.pk}/")
    expires = f"{req.expires_at:%Y-%m-%d %H:%M} UTC" if req.expires_at else "never"
    body = "\n".join(
        [
            f"{req.requested_by.get_username()} asks for account {account.name}.",
            f"Blueprint: {account.blueprint}",
            f"Purpose: {req.get_purpose_display()}",
            f"Expires: {expires}",
            f"Reason: {req.reason or '(none given)'}",
            "",
            f"Review it: {link}",
        ]
    )
    return Message(
        subject=f"[portal] Request #{req.pk} for {account.name} needs approval",
        body=body,
        recipients=approver_emails(),
        link=link,
    )


def _request_decided(request_id: int) -> Message | None:
    req = (
        AccountRequest.objects.select_related("account", "requested_by", "decided_by")
        .filter(pk=request_id)
        .first()
    )
    if req is None or req.status == RequestStatus.PENDING:
        return None
    account = req.account
    decision = "approved" if req.status != RequestStatus.REJECTED else "rejected"
    who = req.decided_by.get_username() if req.decided_by else "the portal"
    link = url(f"/accounts/{account.pk}/")
    lines = [f"Your request for account {account.name} was {decision} by {who}."]
    if req.comment:
        lines.append(f"Comment: {req.comment}")
    if decision == "approved":
        lines.append("Its provision run has started.")
    lines += ["", f"Account: {link}"]
    return Message(
        subject=f"[portal] Request #{req.pk} for {account.name} {decision}",
        body="\n".join(lines),
        recipients=_email_of(req.requested_by),
        link=link,
    )


def _plan_waiting(stage_id: int) -> Message | None:
    stage = StageRun.objects.select_related("run", "run__account").filter(pk=stage_id).first()
    if stage is None or stage.status != StageStatus.WAITING_APPROVAL:
        return None
    run = stage.run
    account = run.account
    link = url(f"/runs/{run.pk}/")
    lines = [
        f"The plan of run #{run.pk} ({run.kind}) of account {account.name} waits for approval."
    ]
    summary = plan_summary_of(stage)
    if summary is not None:
        lines.append(plan_counts(summary))
    if stage.approval_deadline:
        lines.append(f"Decide before {stage.approval_deadline:%Y-%m-%d %H:%M} UTC.")
    lines += ["", f"Review it: {link}"]
    return Message(
        subject=f"[portal] Plan for {account.name} (run #{run.pk}) waits for approval",
        body="\n".join(lines),
        recipients=approver_emails(),
        link=link,
    )


def plan_counts(summary: PlanSummary) -> str:
    """ "Plan: 2 to add, 0 to change, ..." for a message."""
    return (
        f"Plan: {summary.add} to add, {summary.change} to change, "
        f"{summary.replace} to replace, {summary.destroy} to destroy."
    )


def _run_finished(run_id: int) -> Message | None:
    run = (
        PipelineRun.objects.select_related("account", "account__owner", "created_by")
        .filter(pk=run_id)
        .first()
    )
    if run is None or run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        return None  # cancelled runs were stopped by a person who knows
    if run.kind == RunKind.DRIFT_CHECK and run.status == RunStatus.SUCCEEDED:
        return None  # the schedule's routine: what it found is told once, as drift_detected
    account = run.account
    recipients = sorted(set(_email_of(account.owner) + _email_of(run.created_by)))
    if run.status == RunStatus.FAILED:
        link = url(f"/runs/{run.pk}/")
        body = "\n".join(
            [
                f"Run #{run.pk} ({run.kind}) of account {account.name} failed.",
                f"Why: {run.explanation or 'no explanation recorded'}",
                "",
                f"Run page (logs, retry): {link}",
            ]
        )
        subject = f"[portal] Run #{run.pk} ({run.kind}) of {account.name} failed"
    else:
        link = url(f"/accounts/{account.pk}/")
        body = "\n".join(
            [
                f"Run #{run.pk} ({run.kind}) of account {account.name} succeeded.",
                "",
                f"Account: {link}",
            ]
        )
        subject = f"[portal] Run #{run.pk} ({run.kind}) of {account.name} succeeded"
    return Message(subject=subject, body=body, recipients=recipients, link=link)


# --- delivering (in the tasks; errors propagate so the task retries) ---------------------


def deliver_email(*, subject: str, body: str, recipients: list[str]) -> None:
    if recipients:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)


def deliver_webhook(*, text: str, webhook_url: str | None = None) -> None:
    """POST {"text": ...} to the webhook URL (Slack-compatible); raises on failure."""
    target = webhook_url if webhook_url is not None else settings.PORTAL_WEBHOOK_URL
    if not target:
        return
    if urlsplit(target).scheme not in ("http", "https"):
        raise ValueError("PORTAL_WEBHOOK_URL must be an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        target,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:  # noqa: S310
        if response.status >= 300:
            raise OSError(f"webhook answered {response.status}")
