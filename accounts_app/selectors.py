"""Reads about accounts, their requests, runs and plans, as each user may see them.

Every function returns querysets with the joins its callers need
(select_related/prefetch_related), so lists cost a constant number of queries.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, QuerySet

from accounts_app import permissions
from accounts_app.models import Account, AccountRequest, RequestStatus
from pipelines.blueprints import Blueprint, BlueprintError, blueprints_dir, load_blueprint
from pipelines.models import PipelineRun, StageRun, StageStatus

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser

# Keys of a plan summary (pipelines.clients.terraform.PlanSummary.to_dict) shown to users.
PLAN_SUMMARY_KEYS = (
    "add",
    "change",
    "replace",
    "destroy",
    "has_changes",
    "resources",
    "output_changes",
)


def visible_accounts(user: User) -> QuerySet[Account]:
    """Requesters see their own accounts; approvers, admins and staff see all."""
    accounts = Account.objects.select_related("owner")
    if permissions.is_approver(user):
        return accounts
    if not getattr(user, "is_authenticated", False):
        return accounts.none()
    return accounts.filter(owner_id=user.pk)


def filter_accounts(
    accounts: QuerySet[Account],
    *,
    status: str | None = None,
    purpose: str | None = None,
    owner: str | None = None,
) -> QuerySet[Account]:
    """Dashboard/API filters; ``owner`` is a username."""
    if status:
        accounts = accounts.filter(status=status)
    if purpose:
        accounts = accounts.filter(purpose=purpose)
    if owner:
        accounts = accounts.filter(owner__username=owner)
    return accounts


def account_with_runs(user: User, account_id: int) -> Account | None:
    """One visible account with its runs (newest first) and requests, or None."""
    return (
        visible_accounts(user)
        .prefetch_related(
            Prefetch("runs", queryset=PipelineRun.objects.order_by("-created_at", "-id")),
            Prefetch(
                "requests",
                queryset=AccountRequest.objects.select_related("requested_by", "decided_by"),
            ),
        )
        .filter(pk=account_id)
        .first()
    )


def public_outputs(account: Account) -> dict[str, dict[str, Any]]:
    """The account's outputs with every sensitive value replaced by None."""
    shown: dict[str, dict[str, Any]] = {}
    for name, output in sorted((account.outputs or {}).items()):
        output = output if isinstance(output, dict) else {"value": output}
        sensitive = bool(output.get("sensitive"))
        shown[name] = {
            "value": None if sensitive else output.get("value"),
            "sensitive": sensitive,
            "type": output.get("type"),
        }
    return shown


def plan_summary(outputs: Any) -> dict[str, Any] | None:
    """The plan summary held by a plan (or approve_plan) stage's outputs, or None."""
    if not isinstance(outputs, dict):
        return None
    nested = outputs.get("summary")
    summary: dict[str, Any] = nested if isinstance(nested, dict) else outputs
    if not all(isinstance(summary.get(key), int) for key in ("add", "change", "destroy")):
        return None
    return {key: summary[key] for key in PLAN_SUMMARY_KEYS if key in summary}


def latest_plan(account: Account) -> tuple[StageRun, dict[str, Any]] | None:
    """The newest succeeded plan stage of the account and its summary, or None (one query)."""
    stage = (
        StageRun.objects.filter(
            run__account_id=account.pk, kind="plan", status=StageStatus.SUCCEEDED
        )
        .order_by("-finished_at", "-id")
        .first()
    )
    if stage is None:
        return None
    summary = plan_summary(stage.outputs)
    return (stage, summary) if summary is not None else None


def visible_requests(user: User) -> QuerySet[AccountRequest]:
    requests = AccountRequest.objects.select_related(
        "account", "account__owner", "requested_by", "decided_by"
    )
    if permissions.is_approver(user):
        return requests
    if not getattr(user, "is_authenticated", False):
        return requests.none()
    return requests.filter(account__owner_id=user.pk)


def filter_requests(
    requests: QuerySet[AccountRequest],
    *,
    status: str | None = None,
    purpose: str | None = None,
    owner: str | None = None,
) -> QuerySet[AccountRequest]:
    if status:
        requests = requests.filter(status=status)
    if purpose:
        requests = requests.filter(purpose=purpose)
    if owner:
        requests = requests.filter(account__owner__username=owner)
    return requests


def pending_requests() -> QuerySet[AccountRequest]:
    """Requests waiting for a decision, oldest first (for the approvals page)."""
    return (
        AccountRequest.objects.filter(status=RequestStatus.PENDING)
        .select_related("account", "account__owner", "requested_by")
        .order_by("created_at", "id")
    )


def plans_waiting() -> QuerySet[StageRun]:
    """Stages waiting for a human decision, oldest first, with their run and account."""
    return (
        StageRun.objects.filter(status=StageStatus.WAITING_APPROVAL)
        .select_related("run", "run__account", "run__account__owner")
        .order_by("queued_at", "id")
    )


def visible_runs(user: User) -> QuerySet[PipelineRun]:
    runs = PipelineRun.objects.select_related("account", "account__owner", "created_by")
    if permissions.is_approver(user):
        return runs
    if not getattr(user, "is_authenticated", False):
        return runs.none()
    return runs.filter(account__owner_id=user.pk)


def run_with_stages(user: User, run_id: int) -> PipelineRun | None:
    """One visible run with its stages (by position), or None."""
    return (
        visible_runs(user)
        .prefetch_related(Prefetch("stages", queryset=StageRun.objects.order_by("position")))
        .filter(pk=run_id)
        .first()
    )


def usable_blueprints() -> list[Blueprint]:
    """Every blueprint that loads; a broken one is logged and left out, not fatal."""
    root = blueprints_dir()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        if not (entry.is_dir() and (entry / "blueprint.yaml").is_file()):
            continue
        try:
            found.append(load_blueprint(entry.name))
        except BlueprintError as exc:
            logger.warning("blueprint %s left out: %s", entry.name, exc)
    return found
