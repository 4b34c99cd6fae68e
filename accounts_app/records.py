"""Record-keeping on accounts: values stages learned, encrypted secrets, current endpoints.

The bottom layer: it imports the account models and the encryption only, never the
engine, so the engine (``pipelines``) may call it and stage code reaches it through
``StageContext.records``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts_app import crypto
from accounts_app.models import Account, AccountSecret, AccountStatus, Purpose

RECORDABLE = frozenset(
    {"cloud_account_id", "outputs", "endpoints", "status", "resources", "close_pending"}
)


def store_secret(*, account_id: int, name: str, value: str) -> None:
    AccountSecret.objects.update_or_create(
        account_id=account_id, name=name, defaults={"ciphertext": crypto.encrypt(value)}
    )


def read_secret(*, account_id: int, name: str) -> str | None:
    secret = AccountSecret.objects.filter(account_id=account_id, name=name).first()
    return crypto.decrypt(secret.ciphertext) if secret else None


def delete_secret(*, account_id: int, name: str) -> None:
    AccountSecret.objects.filter(account_id=account_id, name=name).delete()


def secret_values(account_id: int) -> list[str]:
    """Every secret of the account, decrypted: for redaction only."""
    ciphertexts = AccountSecret.objects.filter(account_id=account_id).values_list(
        "ciphertext", flat=True
    )
    return decrypted_secrets(ciphertexts)


def decrypted_secrets(ciphertexts: Iterable[bytes]) -> list[str]:
    """Secrets read with their account (the engine's claim), decrypted: for redaction only."""
    return [crypto.decrypt(ciphertext) for ciphertext in ciphertexts]


def current_endpoints(account_id: int) -> dict[str, Any]:
    """Account.endpoints as stored now (stages get the account frozen at their start)."""
    endpoints = Account.objects.values_list("endpoints", flat=True).get(pk=account_id)
    return dict(endpoints or {})


def production_resources(name: str) -> list[dict[str, Any]] | None:
    """Resources of the production account of that name (the reference of parity rules)."""
    found = (
        Account.objects.filter(name=name, purpose=Purpose.PRODUCTION)
        .values_list("resources", flat=True)
        .first()
    )
    return None if found is None else list(found or [])


def record_on_account(account_id: int, **values: Any) -> None:
    """Record values a stage learned (cloud account id, outputs, endpoints) on the account."""
    unknown = set(values) - RECORDABLE
    if unknown:
        raise ValueError(f"cannot record {', '.join(sorted(unknown))} on an account")
    if "endpoints" not in values:
        # Nothing to merge: one UPDATE (it locks the row).
        updated = Account.objects.filter(pk=account_id).update(
            **values, protected=Account.protected_on_update(), updated_at=timezone.now()
        )
        if not updated:
            raise Account.DoesNotExist(f"account {account_id} does not exist")
        return
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account_id)
        # Merge per service, so one stage cannot erase another service's endpoint; a
        # service given None is removed.
        merged = {**account.endpoints, **values["endpoints"]}
        values["endpoints"] = {k: v for k, v in merged.items() if v is not None}
        for key, value in values.items():
            setattr(account, key, value)
        account.save(update_fields=[*values, "updated_at"])


def record_torn_down(account_id: int) -> None:
    """A teardown succeeded: the account is kept for the record, with nothing live on it
    (no expiry, outputs, endpoints, resources or secrets) and its name free for a new one."""
    # Its stored secrets (generated passwords) belonged to what is gone.
    AccountSecret.objects.filter(account_id=account_id).delete()
    Account.objects.filter(pk=account_id).update(
        status=AccountStatus.TORN_DOWN,
        outputs={},
        endpoints={},
        resources=[],
        expires_at=None,
        torn_down_at=timezone.now(),
        updated_at=timezone.now(),
    )


class AccountRecords:
    """The records of one account, as handed to a stage through its context."""

    def __init__(self, account_id: int) -> None:
        self.account_id = account_id

    def record(self, **values: Any) -> None:
        record_on_account(self.account_id, **values)

    def store_secret(self, *, name: str, value: str) -> None:
        store_secret(account_id=self.account_id, name=name, value=value)

    def read_secret(self, name: str) -> str | None:
        return read_secret(account_id=self.account_id, name=name)

    def delete_secret(self, name: str) -> None:
        delete_secret(account_id=self.account_id, name=name)

    def endpoints(self) -> dict[str, Any]:
        return current_endpoints(self.account_id)

    def reference_resources(self, production: str) -> list[dict[str, Any]] | None:
        """The recorded resources of production account ``production``; None if unregistered."""
        return production_resources(production)
