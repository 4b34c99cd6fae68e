"""Production accounts: registered as they are, never built or written to by the portal.

A production account (purpose production, always protected) is the reference its
blueprint's clones are compared with. Registering one starts no run: it records the
config and, when given, the resources of its Terraform state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from accounts_app.events import production_changed
from accounts_app.models import ACCOUNT_NAME_PATTERN, Account, AccountStatus, Purpose
from pipelines import selectors as run_selectors
from pipelines.blueprints import BlueprintError, ConfigInvalid, load_blueprint
from pipelines.models import ACTIVE_RUN_STATUSES, PipelineRun
from pipelines.parity import StateInvalid, resources_from_state
from pipelines.state_reader import StateUnreadable, portal_state_resources
from portal.errors import PortalError

SYSTEM_USERNAME = "portal-system"
CLOUD_ACCOUNT_ID = re.compile(r"[A-Za-z0-9-]{1,32}")


class RegistrationInvalid(PortalError):
    """The registration cannot be made: ``problems`` lists (field, message) pairs.

    Fields are name, blueprint, config (messages "<json path>: <message>"), state,
    cloud_account_id.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems

    def by_field(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for field, message in self.problems:
            found.setdefault(field, []).append(message)
        return found


def system_user() -> User:
    """The owner of accounts nobody asked for (production, operator-made), made on first use."""
    user, created = get_user_model().objects.get_or_create(username=SYSTEM_USERNAME)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@dataclass(frozen=True)
class Registration:
    """A registration's input, checked: the filled config, its version, the resources."""

    config: dict[str, Any]
    version: str
    resources: list[dict[str, Any]] | None


def check_registration(
    *, name: Any, blueprint: str, config: Any, state: Any = None, cloud_account_id: str = ""
) -> Registration:
    """Every check of a registration's input, writing nothing (RegistrationInvalid)."""
    problems: list[tuple[str, str]] = []
    if not isinstance(name, str) or not re.fullmatch(ACCOUNT_NAME_PATTERN, name):
        problems.append(
            (
                "name",
                "3 to 40 characters: a lower-case letter first, then lower-case letters, "
                "digits and dashes",
            )
        )
    filled: dict[str, Any] = {}
    version = ""
    try:
        loaded = load_blueprint(blueprint)
        version = loaded.version
        named = name if isinstance(name, str) else ""
        filled = loaded.validate_config(loaded.config_for_account(config, name=named))
    except ConfigInvalid as exc:
        problems += [("config", str(problem)) for problem in exc.problems]
    except BlueprintError as exc:
        problems.append(("blueprint", str(exc)))
    resources = None
    if state is not None:
        try:
            resources = resources_from_state(state)
        except StateInvalid as exc:
            problems.append(("state", str(exc)))
    if cloud_account_id and not CLOUD_ACCOUNT_ID.fullmatch(cloud_account_id):
        problems.append(("cloud_account_id", "up to 32 letters, digits and dashes"))
    if problems:
        raise RegistrationInvalid(problems)
    return Registration(config=filled, version=version, resources=resources)


def built_by_portal(account: Account) -> bool:
    """Whether the portal built the account: a provision or update of it succeeded."""
    return run_selectors.last_applied_run(account.pk) is not None


def register_production(
    *,
    name: str,
    blueprint: str,
    config: Any,
    state: Any = None,
    cloud_account_id: str = "",
    owner: User | None = None,
) -> tuple[Account, bool]:
    """Register production account ``name`` (or update its registration): (account, created).

    ``state`` is the parsed output of ``terraform show -json``, for a production the portal
    did not build; None keeps what is recorded. An account the portal built (a provision
    or update of it succeeded) becomes production as it is: its resources are read from
    the portal's own backend, and a state file is refused. Raises RegistrationInvalid
    listing every problem; nothing is written then.
    """
    checked = check_registration(
        name=name,
        blueprint=blueprint,
        config=config,
        state=state,
        cloud_account_id=cloud_account_id,
    )
    existing = Account.objects.filter(name=name).first()
    resources = checked.resources
    if existing is not None and existing.blueprint == blueprint and built_by_portal(existing):
        if state is not None:
            raise RegistrationInvalid(
                [
                    (
                        "state",
                        f"account {name!r} was built by the portal: its state is read from "
                        "the portal's own backend, not from a file",
                    )
                ]
            )
        try:
            resources = portal_state_resources(name)
        except StateUnreadable as exc:
            raise RegistrationInvalid([("state", exc.message)]) from exc
    with transaction.atomic():
        account = Account.objects.select_for_update().filter(name=name).first()
        created = account is None
        if account is None:
            account = Account(name=name, blueprint=blueprint, owner=owner or system_user())
        elif account.blueprint != blueprint:
            raise RegistrationInvalid(
                [("name", f"account {name!r} exists with blueprint {account.blueprint!r}")]
            )
        elif account.purpose != Purpose.PRODUCTION and not built_by_portal(account):
            raise RegistrationInvalid(
                [("name", f"account {name!r} exists as a {account.purpose} account")]
            )
        # What production was, to tell its followers what changed (a first registration
        # is no change of production).
        was_production = not created and account.purpose == Purpose.PRODUCTION
        before = (dict(account.config), account.registered_version) if was_production else None
        if (
            not created
            and PipelineRun.objects.filter(account=account, status__in=ACTIVE_RUN_STATUSES).exists()
        ):
            raise RegistrationInvalid(
                [("name", f"account {name!r} has an active run: register it once that ends")]
            )
        account.purpose = Purpose.PRODUCTION
        account.protected = True
        account.status = AccountStatus.READY
        account.expires_at = None  # production never expires
        account.config = checked.config
        account.registered_version = checked.version
        if resources is not None:
            account.resources = resources
        if cloud_account_id:
            account.cloud_account_id = cloud_account_id
        if owner is not None:
            account.owner = owner
        account.save()
        change = _change(before=before, account=account)
        if change:
            # Its followers follow (accounts_app.following), in this transaction.
            production_changed.send(sender=Account, account=account, change=change)
    return account, created


def _change(*, before: tuple[dict[str, Any], str] | None, account: Account) -> str:
    """What a registration update changed that clones follow, in words ('' for nothing)."""
    if before is None:
        return ""
    config, version = before
    parts = []
    changed = sorted(
        key
        for key in set(config) | set(account.config)
        if config.get(key) != account.config.get(key)
    )
    if changed:
        parts.append(f"config changed ({', '.join(changed)})")
    if version != account.registered_version:
        parts.append(f"blueprint version {version or '?'} -> {account.registered_version}")
    if not parts:
        return ""
    return f"production {account.name}: registration updated, " + "; ".join(parts)
