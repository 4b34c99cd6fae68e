"""What a requester does with her own request: withdraw it while it waits, or, once
rejected, edit it and send it again (a new request an approver decides, for the same
account). Callers check that the user is the requester (``permissions.can_change_request``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts_app import notification_queue, parity
from accounts_app.models import (
    RETIRED_STATUSES,
    Account,
    AccountRequest,
    AccountStatus,
    RequestStatus,
)
from accounts_app.services import RequestInvalid, RequestRefused
from pipelines.blueprints import BlueprintError, ConfigInvalid, load_blueprint
from pipelines.yaml_input import YamlInputError, load_yaml

MAX_REASON = 5000


def config_from_text(text: str) -> dict[str, Any]:
    """A config typed as YAML (or JSON) in a form, or RequestInvalid naming ``config``."""
    try:
        data = load_yaml(text, source="the config")
    except YamlInputError as exc:
        raise RequestInvalid({"config": [exc.message]}) from None
    if not isinstance(data, dict):
        raise RequestInvalid({"config": ["a mapping of parameter names to values"]})
    return data


def _locked(account_request: AccountRequest) -> AccountRequest:
    return (
        AccountRequest.objects.select_for_update()
        .select_related("account", "requested_by")
        .get(pk=account_request.pk)
    )


def withdraw_request(*, account_request: AccountRequest, user: User) -> AccountRequest:
    """A pending request is withdrawn; its account, never built, is kept as withdrawn."""
    with transaction.atomic():
        locked = _locked(account_request)
        if locked.status != RequestStatus.PENDING:
            raise RequestRefused(
                f"request #{locked.pk} is {locked.get_status_display().lower()}: "
                "only a pending request is withdrawn"
            )
        locked.status = RequestStatus.WITHDRAWN
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.comment = "withdrawn by the requester"
        locked.save(update_fields=["status", "decided_by", "decided_at", "comment"])
        Account.objects.filter(pk=locked.account_id).update(
            status=AccountStatus.WITHDRAWN, updated_at=timezone.now()
        )
        return locked


def resubmit_request(
    *,
    account_request: AccountRequest,
    user: User,
    config: dict[str, Any] | None = None,
    reason: str = "",
) -> AccountRequest:
    """A rejected request, edited (``config``; None keeps it), sent again as a new request."""
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON:
        raise RequestInvalid({"reason": [f"at most {MAX_REASON} characters"]})
    with transaction.atomic():
        locked = _locked(account_request)
        account = Account.objects.select_for_update().get(pk=locked.account_id)
        if locked.status != RequestStatus.REJECTED or account.status != AccountStatus.REJECTED:
            raise RequestRefused(
                f"request #{locked.pk} is {locked.get_status_display().lower()}: "
                "only a rejected request is sent again"
            )
        if (
            Account.objects.filter(name=account.name)
            .exclude(pk=account.pk)
            .exclude(status__in=RETIRED_STATUSES)
            .exists()
        ):
            raise RequestRefused(f"the name {account.name} now belongs to another account")
        try:
            blueprint = load_blueprint(account.blueprint)
            filled = blueprint.validate_config(locked.config if config is None else config)
        except ConfigInvalid as exc:
            raise RequestInvalid({"config": [str(p) for p in exc.problems]}) from None
        except BlueprintError as exc:
            raise RequestRefused(f"the request cannot be sent again: {exc}") from None
        refusals, warnings = parity.request_problems(
            blueprint=blueprint, purpose=account.purpose, config=filled
        )
        if refusals:
            raise RequestInvalid({"config": [f"{p}: {m}" for p, m in refusals.items()]})
        again = AccountRequest.objects.create(
            account=account,
            requested_by=user,
            config=filled,
            purpose=account.purpose,
            expires_at=locked.expires_at,
            reason=reason or locked.reason,
            parity_warnings=warnings,
        )
        account.config = filled
        account.status = AccountStatus.REQUESTED
        account.save(update_fields=["config", "status", "updated_at"])
        notification_queue.request_needs_approval(again)
        return again
