"""Reads about accounts, their requests, runs and plans, as each user may see them.

The web pages, the API and the admin read through these functions. Each returns
querysets with the joins its callers need (select_related/prefetch_related), so
lists cost a constant number of queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import (
    Case,
    Exists,
    F,
    Model,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    When,
)
from django.db.models.functions import Coalesce, Now

from accounts_app import drift, permissions
from accounts_app.models import (
    RETIRED_STATUSES,
    Account,
    AccountRequest,
    ParityReport,
    RequestStatus,
)
from pipelines.blueprints import (
    Blueprint,
    BlueprintError,
    blueprints_dir,
    list_blueprints,
    load_blueprint,
)
from pipelines.clients.terraform import PlanSummary
from pipelines.models import PipelineRun, StageRun, StageStatus
from pipelines.selectors import plan_summary_of, plans_of_runs

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser


M = TypeVar("M", bound=Model)


def _seen_by(rows: QuerySet[M], *, user: User, owner_field: str) -> QuerySet[M]:
    """The one visibility rule: approvers, admins and staff see all; requesters what they own."""
    if permissions.is_approver(user):
        return rows
    if not user.is_authenticated:
        return rows.none()
    return rows.filter(**{owner_field: user.pk})


def rows_in_order(rows: QuerySet[M], *, ids: list[int]) -> list[M]:
    """The rows of ``rows`` with these ids (a page of them), in this order, with its joins."""
    found = rows.in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


# --- accounts -------------------------------------------------------------------------------


def visible_accounts(user: User) -> QuerySet[Account]:
    """Requesters see their own accounts; approvers, admins and staff see all."""
    return _seen_by(Account.objects.select_related("owner"), user=user, owner_field="owner_id")


def account_named(name: str) -> Account | None:
    """The account of that name (operators' commands see every account); of several, the
    live one, else the latest torn down (its name can be reused)."""
    return (
        Account.objects.filter(name=name)
        .order_by(Case(When(status__in=RETIRED_STATUSES, then=1), default=0), "-created_at")
        .first()
    )


def visible_account(*, user: User, account_id: int) -> Account | None:
    """One account the user may see, or None (no hint that it exists)."""
    return visible_accounts(user).filter(pk=account_id).first()


def filter_accounts(
    accounts: QuerySet[Account],
    *,
    status: str | None = None,
    purpose: str | None = None,
    owner: str | None = None,
) -> QuerySet[Account]:
    """Dashboard/API filters; ``owner`` is a username."""
    return _filtered(
        accounts, owner_field="owner__username", status=status, purpose=purpose, owner=owner
    )


def _filtered(
    rows: QuerySet[M],
    *,
    owner_field: str,
    status: str | None,
    purpose: str | None,
    owner: str | None,
) -> QuerySet[M]:
    """The rows with each filter that has a value (the others left out)."""
    given = {"status": status, "purpose": purpose, owner_field: owner}
    return rows.filter(**{field: value for field, value in given.items() if value})


# Sort keys of the accounts list (?sort=): a leading "-" is descending.
ACCOUNT_SORTS = {
    "name": "name",
    "created": "created_at",
    "expires": "expires_at",
    "status": "status",
}


def searched_and_sorted(
    accounts: QuerySet[Account], *, search: str | None = None, sort: str | None = None
) -> QuerySet[Account]:
    """Accounts whose name or blueprint contains ``search``, in ``sort`` order (by name)."""
    if search:
        accounts = accounts.filter(Q(name__icontains=search) | Q(blueprint__icontains=search))
    wanted = sort or "name"
    key = wanted.lstrip("-")
    field = ACCOUNT_SORTS.get(key, "name")
    descending = wanted.startswith("-") and key in ACCOUNT_SORTS
    return accounts.order_by(
        F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True), "name"
    )


def _latest_run_of_row() -> Subquery:
    latest = PipelineRun.objects.filter(account=OuterRef("pk")).order_by("-created_at", "-id")
    return Subquery(latest.values("pk")[:1])


def with_parity(accounts: QuerySet[Account], *, out_of_parity: bool = False) -> QuerySet[Account]:
    """The accounts, optionally only those whose latest parity report says they are out of
    parity (an alias: the subquery is no column of the page, see ``account_rows``)."""
    if not out_of_parity:
        return accounts
    return accounts.alias(latest_in_parity=_latest_parity_of_row()).filter(latest_in_parity=False)


def _latest_parity_of_row() -> Subquery:
    latest = ParityReport.objects.filter(account=OuterRef("pk")).order_by("-checked_at", "-id")
    return Subquery(latest.values("in_parity")[:1])


@dataclass(frozen=True)
class AccountRow:
    """An account as a list shows it: with its latest run, parity and drift."""

    account: Account
    latest_run: PipelineRun | None  # None: never run
    in_parity: bool | None  # at its latest parity report; None: never checked
    drifted: bool  # as drift.current_drift decides


def account_rows(ids: list[int]) -> list[AccountRow]:
    """A page of accounts (these ids, in this order) with their owners and the facts a list
    shows. Two queries, whose subqueries run for these rows only (not for the rows a deep
    page skips)."""
    annotated = (
        Account.objects.select_related("owner")
        .filter(pk__in=ids)
        .annotate(
            latest_run_id=_latest_run_of_row(),
            latest_in_parity=_latest_parity_of_row(),
            drifted_now=drift.drifted_of_row(),
        )
    )
    found = {account.pk: account for account in annotated}
    run_ids = [account.latest_run_id for account in found.values() if account.latest_run_id]
    runs = PipelineRun.objects.in_bulk(run_ids)
    return [
        AccountRow(
            account=account,
            latest_run=runs.get(account.latest_run_id),
            in_parity=account.latest_in_parity,
            drifted=bool(account.drifted_now),
        )
        for pk in ids
        if (account := found.get(pk)) is not None
    ]


def owner_names(accounts: QuerySet[Account]) -> list[str]:
    """The usernames owning any of these accounts, sorted (EXISTS: no DISTINCT over a join)."""
    owns = accounts.filter(owner_id=OuterRef("pk")).order_by()
    return list(
        get_user_model()
        .objects.filter(Exists(owns))
        .order_by("username")
        .values_list("username", flat=True)
    )


def account_with_runs(*, user: User, account_id: int) -> Account | None:
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


def recent_runs(*, account: Account, limit: int) -> list[PipelineRun]:
    """The account's newest runs, newest first."""
    runs = PipelineRun.objects.filter(account=account).select_related("created_by")
    return list(runs.order_by("-created_at", "-id")[:limit])


def recent_requests(*, account: Account, limit: int) -> list[AccountRequest]:
    requests = account.requests.select_related("requested_by", "decided_by")
    return list(requests.order_by("-created_at", "-id")[:limit])


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


def has_databases(account: Account) -> bool:
    """Whether the account's blueprint declares databases (a broken blueprint: no)."""
    try:
        return bool(load_blueprint(account.blueprint).databases)
    except BlueprintError:
        return False


# --- requests ---------------------------------------------------------------------------------


def visible_requests(user: User) -> QuerySet[AccountRequest]:
    requests = AccountRequest.objects.select_related(
        "account", "account__owner", "requested_by", "decided_by"
    )
    return _seen_by(requests, user=user, owner_field="account__owner_id")


def visible_request(*, user: User, request_id: int) -> AccountRequest | None:
    return visible_requests(user).filter(pk=request_id).first()


def filter_requests(
    requests: QuerySet[AccountRequest],
    *,
    status: str | None = None,
    purpose: str | None = None,
    owner: str | None = None,
) -> QuerySet[AccountRequest]:
    return _filtered(
        requests,
        owner_field="account__owner__username",
        status=status,
        purpose=purpose,
        owner=owner,
    )


def pending_requests() -> QuerySet[AccountRequest]:
    """Requests waiting for a decision, oldest first (for the approvals page)."""
    return (
        AccountRequest.objects.filter(status=RequestStatus.PENDING)
        .select_related("account", "account__owner", "requested_by")
        .order_by("created_at", "id")
    )


# --- runs and plans ---------------------------------------------------------------------------


def visible_runs(user: User) -> QuerySet[PipelineRun]:
    runs = PipelineRun.objects.select_related("account", "account__owner", "created_by")
    return _seen_by(runs, user=user, owner_field="account__owner_id")


def visible_run(*, user: User, run_id: int) -> PipelineRun | None:
    """One run the user may see, with its stages (by position), or None."""
    return (
        visible_runs(user)
        .prefetch_related(Prefetch("stages", queryset=StageRun.objects.order_by("position")))
        .filter(pk=run_id)
        .first()
    )


# Sort keys of run lists (web ?sort= and the API's ordering): a leading "-" is descending.
RUN_SORTS = {
    "started": "created_at",
    "account": "account__name",
    "kind": "kind",
    "status": "status",
    "duration": "duration",
}


def filter_runs(
    runs: QuerySet[PipelineRun],
    *,
    account: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    search: str | None = None,
    sort: str | None = None,
) -> QuerySet[PipelineRun]:
    """Runs of one account (its id or name), kind and status, started since a time, whose
    account name or explanation contains ``search``; sorted by ``sort`` (RUN_SORTS)."""
    if account:
        runs = (
            runs.filter(account_id=int(account))
            if account.isdigit()
            else runs.filter(account__name=account)
        )
    if kind:
        runs = runs.filter(kind=kind)
    if status:
        runs = runs.filter(status=status)
    if since:
        runs = runs.filter(created_at__gte=since)
    if search:
        runs = runs.filter(Q(account__name__icontains=search) | Q(explanation__icontains=search))
    key = (sort or "-started").lstrip("-")
    if key not in RUN_SORTS:
        key = "started"
    field = RUN_SORTS[key]
    if field == "duration":
        runs = runs.annotate(duration=Coalesce("finished_at", Now()) - F("created_at"))
    descending = (sort or "-started").startswith("-")
    return runs.order_by(f"-{field}" if descending else field, "-id")


def approvals_waiting_count() -> int:
    """Requests and plans waiting for a decision (the navigation bar's number)."""
    requests = AccountRequest.objects.filter(status=RequestStatus.PENDING).count()
    return requests + StageRun.objects.filter(status=StageStatus.WAITING_APPROVAL).count()


def latest_run(account: Account) -> PipelineRun | None:
    return account.runs.order_by("-created_at", "-id").first()


@dataclass(frozen=True)
class WaitingPlan:
    """A stage waiting for a human decision, with the plan summary it asks about."""

    stage: StageRun
    summary: PlanSummary | None
    parity: dict[str, Any] | None = None  # the plan stage's check against production


def plans_waiting() -> list[WaitingPlan]:
    """Stages waiting for a decision, oldest first, with their run, account and plan (2 queries)."""
    waiting = list(
        StageRun.objects.filter(status=StageStatus.WAITING_APPROVAL)
        .select_related("run", "run__account", "run__account__owner")
        .order_by("queued_at", "id")
    )
    plans = plans_of_runs(stage.run_id for stage in waiting)
    found = []
    for stage in waiting:
        plan = plans.get(stage.run_id)
        found.append(
            WaitingPlan(
                stage=stage,
                summary=plan_summary_of(stage) or (plan.summary if plan else None),
                parity=plan.parity if plan else None,
            )
        )
    return found


# --- blueprints -------------------------------------------------------------------------------


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


def blueprint_named(name: str) -> Blueprint | None:
    """The blueprint of this name when it loads, else None."""
    try:
        return load_blueprint(name)
    except BlueprintError:
        return None


def requestable_blueprints() -> tuple[list[Blueprint], list[str]]:
    """The blueprints offered for a request, and the problem when the folder cannot be listed."""
    try:
        return list_blueprints(), []
    except BlueprintError as exc:
        return [], [str(exc)]
