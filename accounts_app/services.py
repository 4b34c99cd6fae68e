"""Writes about accounts: creating them, their secrets, their recorded values, and the
request workflow (request, approve, reject, start a run)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts_app import permissions, policies
from accounts_app.models import (
    ACCOUNT_NAME_PATTERN,
    Account,
    AccountRequest,
    AccountStatus,
    Purpose,
    RequestStatus,
)
from pipelines.blueprints import (
    Blueprint,
    BlueprintError,
    ConfigInvalid,
    Policy,
    UnknownBlueprint,
    load_blueprint,
)
from pipelines.models import RunKind

if TYPE_CHECKING:
    from pipelines.models import PipelineRun


class AccountConflict(Exception):
    """The account name is taken by an account of another blueprint."""


@transaction.atomic
def create_or_reuse_account(
    *,
    name: str,
    blueprint: str,
    config: dict[str, Any],
    purpose: str,
    owner: User,
) -> tuple[Account, bool]:
    """The account with this name, created or (same blueprint) given this config.

    The config is validated against the blueprint first (ConfigInvalid lists every
    problem), so an account never holds a config its blueprint refuses.
    """
    load_blueprint(blueprint).validate_config(config)
    account = Account.objects.select_for_update().filter(name=name).first()
    if account is None:
        account = Account(name=name, blueprint=blueprint, purpose=purpose, owner=owner)
        account.config = config
        account.full_clean()
        account.save()
        return account, True
    if account.blueprint != blueprint:
        raise AccountConflict(
            f"account {name!r} exists with blueprint {account.blueprint!r}, not {blueprint!r}"
        )
    if account.protected:
        raise AccountConflict(f"account {name!r} is protected and cannot be changed")
    account.config = config
    account.purpose = purpose
    account.save(update_fields=["config", "purpose", "updated_at"])
    return account, False


# --- The request workflow ------------------------------------------------------------------


class RequestInvalid(Exception):
    """A request that cannot be accepted; one or more messages per field.

    ``errors`` maps a field (name, blueprint, purpose, expires_at, config, comment)
    to its messages; config problems read "<json path>: <message>". ``errors_by_path``
    maps each config JSON path (e.g. "$.services[0].name") to its messages, so a
    form can show each one next to its input.
    """

    def __init__(
        self, errors: dict[str, list[str]], errors_by_path: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__("; ".join(f"{k}: {m}" for k, msgs in errors.items() for m in msgs))
        self.errors = errors
        self.errors_by_path = errors_by_path or {}


class RequestRefused(Exception):
    """The action does not fit the request's (or account's) state; the message says why."""


def _as_aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def check_request(
    *,
    user: User,
    name: Any,
    blueprint: Any,
    purpose: Any,
    config: Any,
    expires_at: datetime | None = None,
) -> tuple[Blueprint, dict[str, Any], datetime | None]:
    """Every check of a request, without writing: (blueprint, filled config, expires_at).

    Raises one RequestInvalid listing every problem found.
    """
    errors: dict[str, list[str]] = {}
    by_path: dict[str, list[str]] = {}

    def add(field_name: str, message: str) -> None:
        errors.setdefault(field_name, []).append(message)

    if not isinstance(name, str) or not re.fullmatch(ACCOUNT_NAME_PATTERN, name):
        add(
            "name",
            "3 to 40 characters: a lower-case letter first, then lower-case letters, "
            "digits and dashes",
        )
    elif Account.objects.filter(name=name).exists():
        add("name", f"an account named {name!r} already exists; choose another name")

    loaded: Blueprint | None = None
    try:
        loaded = load_blueprint(blueprint if isinstance(blueprint, str) else "")
    except UnknownBlueprint:
        add("blueprint", f"unknown blueprint {blueprint!r}")
    except BlueprintError as exc:
        add("blueprint", str(exc))

    policy = Policy()
    if purpose not in Purpose.values:
        add("purpose", f"choose one of {', '.join(Purpose.values)}")
    elif loaded is not None:
        problem = policies.purpose_error(loaded, purpose)
        if problem:
            add("purpose", problem)
        policy = loaded.policy_for(purpose)

    if expires_at is not None and not isinstance(expires_at, datetime):
        add("expires_at", "must be a date and time")
        expires_at = None
    else:
        expires_at = _as_aware(expires_at) if expires_at is not None else None
        expires_at, problem = policies.resolve_expiry(policy, purpose, expires_at, timezone.now())
        if problem:
            add("expires_at", problem)

    filled: dict[str, Any] = {}
    if loaded is not None:
        try:
            filled = loaded.validate_config(config)
        except ConfigInvalid as exc:
            for found in exc.problems:
                add("config", str(found))
                by_path.setdefault(found.path, []).append(found.message)

    if loaded is not None and "purpose" not in errors:
        in_use = policies.active_count(user.pk, loaded.name, purpose)
        problem = policies.quota_error(policy, in_use, loaded.name, purpose)
        if problem:
            add("purpose", problem)

    if errors:
        raise RequestInvalid(errors, by_path)
    assert loaded is not None
    return loaded, filled, expires_at


def request_account(
    *,
    user: User,
    name: str,
    blueprint: str,
    purpose: str,
    config: dict[str, Any],
    expires_at: datetime | None = None,
    reason: str = "",
) -> tuple[Account, AccountRequest]:
    """Ask for a new account. Auto-approved requests start their provision run at once.

    Callers check ``permissions.can_request``. Raises RequestInvalid (nothing written).
    """
    from accounts_app import notifications

    try:
        with transaction.atomic():
            # One request at a time per user, so two racing requests cannot both pass the quota.
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
            loaded, filled, expires = check_request(
                user=user,
                name=name,
                blueprint=blueprint,
                purpose=purpose,
                config=config,
                expires_at=expires_at,
            )
            account = Account(
                name=name,
                blueprint=loaded.name,
                purpose=purpose,
                owner=user,
                config=filled,
                expires_at=expires,
                status=AccountStatus.REQUESTED,
            )
            account.save()
            groups = policies.auto_approving_groups(
                loaded.policy_for(purpose), permissions.effective_roles(user)
            )
            req = AccountRequest.objects.create(
                account=account,
                requested_by=user,
                config=filled,
                purpose=purpose,
                expires_at=expires,
                reason=reason.strip() if isinstance(reason, str) else "",
            )
            if groups:
                req.status = RequestStatus.AUTO_APPROVED
                req.decided_at = timezone.now()
                req.comment = f"auto-approved: member of {', '.join(groups)}"
                req.save(update_fields=["status", "decided_at", "comment"])
                _start_provision(account, user)
                account.refresh_from_db()
            else:
                notifications.request_needs_approval(req)
            return account, req
    except IntegrityError:
        # Another request took the name between our check and our insert.
        if Account.objects.filter(name=name).exists():
            raise RequestInvalid(
                {"name": [f"an account named {name!r} already exists; choose another name"]}
            ) from None
        raise


def _start_provision(account: Account, user: User) -> PipelineRun:
    from pipelines.services import RunRefused, start_run

    try:
        return start_run(account, RunKind.PROVISION, user=user)
    except (RunRefused, ConfigInvalid, BlueprintError) as exc:
        raise RequestRefused(f"the provision run cannot start: {exc}") from exc


def _locked_pending(req: AccountRequest) -> AccountRequest:
    locked = AccountRequest.objects.select_for_update().select_related("account").get(pk=req.pk)
    if locked.status != RequestStatus.PENDING:
        raise RequestRefused(
            f"request #{locked.pk} is already {locked.get_status_display().lower()}"
        )
    return locked


def approve_request(
    req: AccountRequest, *, user: User, comment: str = ""
) -> tuple[AccountRequest, PipelineRun]:
    """Approve a pending request and start the account's provision run.

    Callers check ``permissions.can_decide``. Raises RequestRefused when the request
    is not pending or the run cannot start (nothing is written then).
    """
    from accounts_app import notifications

    with transaction.atomic():
        locked = _locked_pending(req)
        locked.status = RequestStatus.APPROVED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.comment = (comment or "").strip()
        locked.save(update_fields=["status", "decided_by", "decided_at", "comment"])
        run = _start_provision(locked.account, user)
        notifications.request_decided(locked)
    locked.account.refresh_from_db()
    return locked, run


def reject_request(req: AccountRequest, *, user: User, comment: str) -> AccountRequest:
    """Reject a pending request (a comment saying why is required); the account is rejected."""
    from accounts_app import notifications

    comment = (comment or "").strip()
    if not comment:
        raise RequestInvalid({"comment": ["a rejection needs a comment saying why"]})
    with transaction.atomic():
        locked = _locked_pending(req)
        locked.status = RequestStatus.REJECTED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.comment = comment
        locked.save(update_fields=["status", "decided_by", "decided_at", "comment"])
        account = Account.objects.select_for_update().get(pk=locked.account_id)
        account.status = AccountStatus.REJECTED
        account.save(update_fields=["status", "updated_at"])
        locked.account = account
        notifications.request_decided(locked)
    return locked


# Runs a user may start on an account from the portal (teardown etc. have their own paths).
# Kinds a user may start on an account (drift checks and expiry teardowns come from schedules).
USER_RUN_KINDS = (RunKind.PROVISION, RunKind.UPDATE, RunKind.REFRESH_DATA, RunKind.TEARDOWN)


def start_account_run(account: Account, kind: str, *, user: User) -> PipelineRun:
    """Start a provision, update, refresh-data or teardown run on an approved account.

    Callers check ``permissions.can_start_run``. Raises RequestRefused when the
    account's request is not approved, pipelines.services.RunConflict when a run
    is active (``holder_id``), and RunRefused for other state problems.
    """
    from pipelines.services import RunRefused, start_run

    if kind not in USER_RUN_KINDS:
        raise RequestRefused(
            f"run kind {kind!r} cannot be started here (use {', '.join(USER_RUN_KINDS)})"
        )
    account.refresh_from_db()
    if account.status == AccountStatus.REQUESTED:
        raise RequestRefused(f"account {account.name} waits for its request to be approved")
    if account.status == AccountStatus.REJECTED:
        raise RequestRefused(f"account {account.name} was rejected")
    try:
        return start_run(account, kind, user=user)
    except (ConfigInvalid, BlueprintError) as exc:
        raise RunRefused(f"the run cannot start: {exc}") from exc
