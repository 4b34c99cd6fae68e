"""Decommission: tear down any account as one operation, behind the safety rails.

``request_teardown`` is what the web page, the API and ``account_teardown`` call: the
account's name typed again, then every rail that needs no AWS call
(``pipelines.teardown_rails.check_offline``, logged), then a teardown run whose first
stage checks the live rails and lists what the sweep would remove. Approval follows the
blueprint's policy (the run's ``approve_plan`` stage).
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import User
from django.db import transaction

from accounts_app.models import Account, AccountStatus
from accounts_app.services import RequestInvalid
from pipelines.blueprints import BlueprintError, ConfigInvalid, load_blueprint
from pipelines.clients import aws
from pipelines.models import PipelineRun, RunKind
from pipelines.services import RunRefused, start_run
from pipelines.teardown_rails import RailRefused, Subject, check_offline, uses_aws
from portal.errors import PortalError

logger = logging.getLogger(__name__)

MAX_REASON = 2000
# Nothing was built for these: a pending request is withdrawn, a rejected one edited.
NOT_BUILT = {
    AccountStatus.REQUESTED: "waits for its request to be approved: withdraw the request instead",
    AccountStatus.REJECTED: "was rejected and never built: nothing to tear down",
    AccountStatus.TORN_DOWN: "is already torn down",
    AccountStatus.WITHDRAWN: "was withdrawn and never built: nothing to tear down",
}


class TeardownRefused(PortalError):
    """The teardown cannot start; the message says why (``field`` names bad input)."""


def subject_of(account: Account) -> Subject:
    try:
        blueprint_uses_aws = uses_aws(
            cloud_account_id=account.cloud_account_id, blueprint=load_blueprint(account.blueprint)
        )
    except BlueprintError:
        blueprint_uses_aws = True  # unknown: the stricter rails apply
    return Subject(
        name=account.name,
        purpose=account.purpose,
        protected=account.protected,
        cloud_account_id=account.cloud_account_id,
        uses_aws=blueprint_uses_aws,
    )


def check_teardown(*, account: Account, confirm: str) -> None:
    """Every check made before a teardown run starts, none of which calls AWS."""
    if not isinstance(confirm, str) or confirm.strip() != account.name:
        raise RequestInvalid(
            {"confirm": [f"type the account's name, {account.name}, to confirm its teardown"]}
        )
    problem = NOT_BUILT.get(AccountStatus(account.status))
    if problem:
        raise TeardownRefused(f"account {account.name} {problem}")

    def log(line: str) -> None:
        logger.info("teardown of %s: %s", account.name, line)

    try:
        check_offline(subject_of(account), log=log, aws_settings=aws.AwsSettings.from_settings())
    except RailRefused as exc:
        logger.warning("teardown of %s: %s", account.name, exc.message)
        raise


def request_teardown(
    *, account: Account, user: User, confirm: str, reason: str = ""
) -> PipelineRun:
    """Start a teardown run of ``account`` for ``user`` (callers check ``can_start_run``).

    Raises RequestInvalid (``confirm`` is not the name), TeardownRefused (nothing built),
    RailRefused (a safety rail), pipelines.services.RunConflict (a run is active) or
    RunRefused.
    """
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON:
        raise RequestInvalid({"reason": [f"at most {MAX_REASON} characters"]})
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account.pk)
        check_teardown(account=account, confirm=confirm)
        try:
            run = start_run(account, RunKind.TEARDOWN, user=user)
        except (ConfigInvalid, BlueprintError) as exc:
            raise RunRefused(f"the teardown cannot start: {exc}") from exc
        Account.objects.filter(pk=account.pk).update(
            teardown_requested_by=user, teardown_reason=reason
        )
        return run
