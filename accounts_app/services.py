"""Writes about accounts: creating them, their secrets, their recorded values."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from accounts_app import crypto
from accounts_app.models import Account, AccountSecret
from pipelines.blueprints import load_blueprint


class AccountConflict(Exception):
    """The account name is taken by an account of another blueprint."""


@transaction.atomic
def create_or_reuse_account(
    *,
    name: str,
    blueprint: str,
    config: dict[str, Any],
    purpose: str,
    owner: AbstractBaseUser,
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


def store_secret(account_id: int, name: str, value: str) -> None:
    AccountSecret.objects.update_or_create(
        account_id=account_id, name=name, defaults={"ciphertext": crypto.encrypt(value)}
    )


def read_secret(account_id: int, name: str) -> str | None:
    secret = AccountSecret.objects.filter(account_id=account_id, name=name).first()
    return crypto.decrypt(secret.ciphertext) if secret else None


def secret_values(account_id: int) -> list[str]:
    """Every secret of the account, decrypted: for redaction only."""
    return [
        crypto.decrypt(s.ciphertext) for s in AccountSecret.objects.filter(account_id=account_id)
    ]


def record_on_account(account_id: int, **values: Any) -> None:
    """Record values a stage learned (cloud account id, outputs, endpoints) on the account."""
    allowed = {"cloud_account_id", "outputs", "endpoints", "status"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"cannot record {', '.join(sorted(unknown))} on an account")
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account_id)
        if "endpoints" in values:
            # Merge per service, so one stage cannot erase another service's endpoint.
            values["endpoints"] = {**account.endpoints, **values["endpoints"]}
        for key, value in values.items():
            setattr(account, key, value)
        account.save(update_fields=[*values, "updated_at"])
