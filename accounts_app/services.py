"""Writes of the request workflow: request, approve, reject, start a run a user may
start, preview a request's Terraform; and creating accounts for operators.

Web views, the API, the Django admin and the management commands all write
through these functions (and ``pipelines.services`` for runs already started),
so every check is made once, here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts_app import notification_queue, parity, permissions, policies
from accounts_app.models import (
    ACCOUNT_NAME_PATTERN,
    RETIRED_STATUSES,
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
from pipelines.models import PipelineRun, RunKind
from pipelines.rendering import RenderError, render_blueprint
from pipelines.services import RunRefused, start_run
from pipelines.stages.render import template_context
from portal.errors import PortalError


class AccountConflict(PortalError):
    """The account name is taken by an account of another blueprint."""


class ParityRefused(PortalError):
    """A config that breaks a parity rule under ``enforce: refuse``.

    ``problems`` lists "<json path>: <message>" lines, each naming the path, the rule and
    production's value (as ``ConfigInvalid`` lists schema problems).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems), field="config")
        self.problems = problems


@dataclass(frozen=True)
class Provisioned:
    """What ``provision_account`` did: the account, whether it is new, its run, the warnings."""

    account: Account
    created: bool
    run: PipelineRun
    parity_warnings: list[str]


def provision_account(
    *,
    name: str,
    blueprint: str,
    config: dict[str, Any],
    purpose: str,
    owner: User,
) -> Provisioned:
    """An operator's provision (``account_provision``): create or reuse the account, record
    the request as approved, start the provision run.

    The config passes the same checks as a request's: the blueprint's schema
    (ConfigInvalid) and production's values for the purpose (ParityRefused under
    ``refuse``; under ``warn`` the warnings are recorded with the request and returned).
    """
    with transaction.atomic():
        loaded = load_blueprint(blueprint)
        filled = loaded.validate_config(loaded.config_for_account(config, name=name))
        refusals, warnings = parity.request_problems(
            blueprint=loaded, purpose=purpose, config=filled
        )
        if refusals:
            raise ParityRefused([f"{path}: {message}" for path, message in refusals.items()])
        account, created = _create_or_reuse_account(
            name=name, blueprint=loaded.name, config=filled, purpose=purpose, owner=owner
        )
        AccountRequest.objects.create(
            account=account,
            requested_by=owner,
            config=filled,
            purpose=purpose,
            expires_at=account.expires_at,
            reason="account_provision (command line)",
            parity_warnings=warnings,
            status=RequestStatus.AUTO_APPROVED,
            decided_at=timezone.now(),
            comment="made by an operator on the command line",
        )
        run = start_run(account, RunKind.PROVISION, user=owner)
    return Provisioned(account=account, created=created, run=run, parity_warnings=warnings)


def create_or_reuse_account(
    *,
    name: str,
    blueprint: str,
    config: dict[str, Any],
    purpose: str,
    owner: User,
) -> tuple[Account, bool]:
    """The account with this name, created or (same blueprint) given this config;
    no run is started (a benchmark's or a test's own accounts)."""
    with transaction.atomic():
        return _create_or_reuse_account(
            name=name, blueprint=blueprint, config=config, purpose=purpose, owner=owner
        )


def _create_or_reuse_account(
    *,
    name: str,
    blueprint: str,
    config: dict[str, Any],
    purpose: str,
    owner: User,
) -> tuple[Account, bool]:
    """The account with this name, created or (same blueprint) given this (checked) config."""
    # A torn-down account keeps its record; a new account may take its name.
    live = Account.objects.exclude(status__in=RETIRED_STATUSES)
    account = live.select_for_update().filter(name=name).first()
    if account is None:
        account = Account(name=name, blueprint=blueprint, purpose=purpose, owner=owner)
        account.config = config
        account.full_clean()
        account.save()
        return account, True
    if account.blueprint != blueprint:
        raise AccountConflict(
            f"account {name!r} exists with blueprint {account.blueprint!r}, not {blueprint!r}",
            field="name",
        )
    if account.protected:
        raise AccountConflict(f"account {name!r} is protected and cannot be changed", field="name")
    account.config = config
    account.purpose = purpose
    account.save(update_fields=["config", "purpose", "updated_at"])
    return account, False


# --- The request workflow ------------------------------------------------------------------


class RequestInvalid(PortalError):
    """A request that cannot be accepted; one or more messages per field.

    ``errors`` maps a field (name, blueprint, purpose, expires_at, config, comment)
    to its messages; config problems read "<json path>: <message>". ``errors_by_path``
    maps each config JSON path (e.g. "$.services[0].name") to its messages, so a
    form can show each one next to its input. With one field only, ``field`` names it.
    """

    def __init__(
        self, errors: dict[str, list[str]], *, errors_by_path: dict[str, list[str]] | None = None
    ) -> None:
        if len(errors) == 1:
            [(field, messages)] = errors.items()
            super().__init__("; ".join(messages), field=field)
        else:
            super().__init__("; ".join(f"{k}: {m}" for k, msgs in errors.items() for m in msgs))
        self.errors = errors
        self.errors_by_path = errors_by_path or {}


class RequestRefused(PortalError):
    """The action does not fit the request's (or account's) state; the message says why."""


def _as_aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def check_request(
    *,
    user: User,
    name: object,
    blueprint: object,
    purpose: object,
    config: object,
    expires_at: object = None,
) -> tuple[Blueprint, dict[str, Any], datetime | None]:
    """Every check of a request, without writing: (blueprint, filled config, expires_at).

    Inputs are as the caller received them (checked here). Raises one RequestInvalid
    listing every problem found.
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
    elif Account.objects.exclude(status__in=RETIRED_STATUSES).filter(name=name).exists():
        add("name", f"an account named {name!r} already exists; choose another name")

    loaded: Blueprint | None = None
    try:
        loaded = load_blueprint(blueprint if isinstance(blueprint, str) else "")
    except UnknownBlueprint:
        add("blueprint", f"unknown blueprint {blueprint!r}")
    except BlueprintError as exc:
        add("blueprint", str(exc))

    policy = Policy()
    chosen = purpose if isinstance(purpose, str) else ""
    if chosen not in Purpose.values:
        add("purpose", f"choose one of {', '.join(Purpose.values)}")
    elif loaded is not None:
        problem = policies.purpose_error(blueprint=loaded, purpose=chosen)
        if problem:
            add("purpose", problem)
        policy = loaded.policy_for(chosen)

    expires: datetime | None = None
    if expires_at is not None and not isinstance(expires_at, datetime):
        add("expires_at", "must be a date and time")
    else:
        given = _as_aware(expires_at) if isinstance(expires_at, datetime) else None
        expires, problem = policies.resolve_expiry(
            policy=policy, purpose=chosen, expires_at=given, now=timezone.now()
        )
        if problem:
            add("expires_at", problem)

    filled: dict[str, Any] = {}
    if loaded is not None:
        try:
            named = name if isinstance(name, str) else ""
            filled = loaded.validate_config(loaded.config_for_account(config, name=named))
        except ConfigInvalid as exc:
            for found in exc.problems:
                add("config", str(found))
                by_path.setdefault(found.path, []).append(found.message)

    if loaded is not None and "config" not in errors and "purpose" not in errors:
        refusals, _ = parity.request_problems(blueprint=loaded, purpose=chosen, config=filled)
        for path, message in refusals.items():
            add("config", f"{path}: {message}")
            by_path.setdefault(path, []).append(message)

    if loaded is not None and "purpose" not in errors:
        problem = _quota_problem(blueprint=loaded, purpose=chosen, owner_id=user.pk)
        if problem:
            add("purpose", problem)

    if errors:
        raise RequestInvalid(errors, errors_by_path=by_path)
    assert loaded is not None
    return loaded, filled, expires


def _quota_problem(
    *, blueprint: Blueprint, purpose: str, owner_id: int, leaving_out: int | None = None
) -> str | None:
    """The quota message when the owner has no room for one more such account, else None."""
    in_use = policies.active_count(
        owner_id=owner_id, blueprint=blueprint.name, purpose=purpose, leaving_out=leaving_out
    )
    return policies.quota_error(
        blueprint.policy_for(purpose), in_use=in_use, blueprint=blueprint.name, purpose=purpose
    )


def _lock_user(user_id: int) -> None:
    """One request (or life start) at a time per user, so two cannot both pass the quota."""
    get_user_model().objects.select_for_update().filter(pk=user_id).first()


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
    try:
        with transaction.atomic():
            _lock_user(user.pk)
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
                policy=loaded.policy_for(purpose), roles=permissions.effective_roles(user)
            )
            _, warnings = parity.request_problems(blueprint=loaded, purpose=purpose, config=filled)
            req = AccountRequest.objects.create(
                account=account,
                requested_by=user,
                config=filled,
                purpose=purpose,
                expires_at=expires,
                reason=reason.strip() if isinstance(reason, str) else "",
                parity_warnings=warnings,
            )
            if groups:
                req.status = RequestStatus.AUTO_APPROVED
                req.decided_at = timezone.now()
                req.comment = f"auto-approved: member of {', '.join(groups)}"
                req.save(update_fields=["status", "decided_at", "comment"])
                _start_provision(account=account, user=user)
                account.refresh_from_db()
            else:
                notification_queue.request_needs_approval(req)
            return account, req
    except IntegrityError:
        # Another request took the name between our check and our insert.
        if Account.objects.exclude(status__in=RETIRED_STATUSES).filter(name=name).exists():
            raise RequestInvalid(
                {"name": [f"an account named {name!r} already exists; choose another name"]}
            ) from None
        raise


def _start_provision(*, account: Account, user: User) -> PipelineRun:
    try:
        return start_run(account, RunKind.PROVISION, user=user)
    except (RunRefused, ConfigInvalid, BlueprintError) as exc:
        raise RequestRefused(f"the provision run cannot start: {exc}") from exc


def _locked_pending(account_request: AccountRequest) -> AccountRequest:
    locked = (
        AccountRequest.objects.select_for_update()
        .select_related("account", "requested_by")
        .get(pk=account_request.pk)
    )
    if locked.status != RequestStatus.PENDING:
        raise RequestRefused(
            f"request #{locked.pk} is already {locked.get_status_display().lower()}"
        )
    return locked


def approve_request(
    *, account_request: AccountRequest, user: User, comment: str = ""
) -> tuple[AccountRequest, PipelineRun]:
    """Approve a pending request and start the account's provision run.

    Callers check ``permissions.can_decide``. Raises RequestRefused when the request
    is not pending, is the approver's own (four-eyes, unless
    ``PORTAL_ALLOW_SELF_APPROVAL``), or the run cannot start (nothing is written then).
    The run is the requester's: they asked for it, the approver only decided.
    """
    with transaction.atomic():
        locked = _locked_pending(account_request)
        if locked.requested_by_id == user.pk and not settings.PORTAL_ALLOW_SELF_APPROVAL:
            raise RequestRefused(f"request #{locked.pk} is your own: another approver decides it")
        locked.status = RequestStatus.APPROVED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.comment = (comment or "").strip()
        locked.save(update_fields=["status", "decided_by", "decided_at", "comment"])
        run = _start_provision(account=locked.account, user=locked.requested_by)
        notification_queue.request_decided(locked)
    locked.account.refresh_from_db()
    return locked, run


def reject_request(*, account_request: AccountRequest, user: User, comment: str) -> AccountRequest:
    """Reject a pending request (a comment saying why is required); the account is rejected."""
    comment = (comment or "").strip()
    if not comment:
        raise RequestInvalid({"comment": ["a rejection needs a comment saying why"]})
    with transaction.atomic():
        locked = _locked_pending(account_request)
        locked.status = RequestStatus.REJECTED
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.comment = comment
        locked.save(update_fields=["status", "decided_by", "decided_at", "comment"])
        account = Account.objects.select_for_update().get(pk=locked.account_id)
        account.status = AccountStatus.REJECTED
        account.save(update_fields=["status", "updated_at"])
        locked.account = account
        notification_queue.request_decided(locked)
    return locked


# Kinds a user may start on an account (expiry teardowns come from the schedule).
USER_RUN_KINDS = (
    RunKind.PROVISION,
    RunKind.UPDATE,
    RunKind.REFRESH_DATA,
    RunKind.TEARDOWN,
    RunKind.DRIFT_CHECK,
)
# A run that builds an account in one of these starts its life again: the request checks apply.
LIFE_START_STATUSES = (AccountStatus.TORN_DOWN, AccountStatus.FAILED)
BUILDING_RUN_KINDS = (RunKind.PROVISION, RunKind.UPDATE)


def start_account_run(*, account: Account, kind: RunKind | str, user: User) -> PipelineRun:
    """Start a provision, update, refresh-data or teardown run on an approved account.

    Callers check ``permissions.can_start_run``. A provision or update of a torn-down
    or failed account starts its life again, so it passes the request's checks first (the
    blueprint's policy for its purpose, the owner's quota, the expiry date). Raises
    RequestRefused when the account's request is not approved or those checks fail,
    pipelines.services.RunConflict when a run is active (``holder_id``), and RunRefused
    for other state problems.
    """
    if kind not in USER_RUN_KINDS:
        raise RequestRefused(
            f"run kind {kind!r} cannot be started here (use {', '.join(USER_RUN_KINDS)})",
            field="kind",
        )
    with transaction.atomic():
        _lock_user(account.owner_id)
        account.refresh_from_db()
        if account.status == AccountStatus.REQUESTED:
            raise RequestRefused(f"account {account.name} waits for its request to be approved")
        if account.status == AccountStatus.REJECTED:
            raise RequestRefused(f"account {account.name} was rejected")
        if kind in BUILDING_RUN_KINDS and account.status in LIFE_START_STATUSES:
            _check_life_start(account)
        if kind == RunKind.DRIFT_CHECK and (
            account.status != AccountStatus.READY or account.purpose == Purpose.PRODUCTION
        ):
            raise RequestRefused(
                f"account {account.name} is not a ready clone: only those are checked for drift"
            )
        try:
            return start_run(account, RunKind(kind), user=user)
        except (ConfigInvalid, BlueprintError) as exc:
            raise RunRefused(f"the run cannot start: {exc}") from exc


def _check_life_start(account: Account) -> None:
    """The request checks for an account about to be provisioned again (RequestRefused)."""
    try:
        blueprint = load_blueprint(account.blueprint)
    except BlueprintError as exc:
        raise RequestRefused(f"the run cannot start: {exc}") from exc
    problem = policies.purpose_error(
        blueprint=blueprint, purpose=account.purpose
    ) or _quota_problem(
        blueprint=blueprint,
        purpose=account.purpose,
        owner_id=account.owner_id,
        leaving_out=account.pk,
    )
    if problem:
        raise RequestRefused(
            f"account {account.name} cannot start again: {problem}", field="purpose"
        )
    if (
        account.status == AccountStatus.TORN_DOWN
        and Account.objects.filter(name=account.name).exclude(status__in=RETIRED_STATUSES).exists()
    ):
        raise RequestRefused(f"the name {account.name} now belongs to another account")
    if account.expires_at is not None and account.expires_at <= timezone.now():
        raise RequestRefused(
            f"account {account.name} expired on {account.expires_at:%Y-%m-%d}: request a new one",
            field="expires_at",
        )


# --- previews ---------------------------------------------------------------------------------


def preview_files(
    *, blueprint: Blueprint, config: dict[str, Any], account_name: str, purpose: str
) -> dict[str, bytes]:
    """The Terraform files (path -> content) a request would render to; nothing is stored.

    Raises RequestInvalid naming ``config`` when the config is refused or does not render.
    """
    try:
        filled = blueprint.validate_config(blueprint.config_for_account(config, name=account_name))
        context = template_context(blueprint, filled, account_name=account_name, purpose=purpose)
        return dict(render_blueprint(blueprint.terraform_dir, context).files)
    except ConfigInvalid as exc:
        raise RequestInvalid({"config": [str(problem) for problem in exc.problems]}) from None
    except RenderError as exc:
        raise RequestInvalid({"config": [f"the blueprint does not render: {exc}"]}) from None
