"""Who asks for what: accounts (environments) and the requests for them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

# Re-exported: callers import the pattern from here; its home is Django-free for the engine.
from accounts_app.names import ACCOUNT_NAME_PATTERN as ACCOUNT_NAME_PATTERN


class Purpose(models.TextChoices):
    DEMO = "demo", "Demo"
    QA = "qa", "QA"
    LOADTEST = "loadtest", "Load test"
    STANDBY = "standby", "Standby"
    PRODUCTION = "production", "Production"


# What a request may ask for: production is registered as it is, never requested.
CLONE_PURPOSES = tuple(str(p) for p in Purpose.values if p != Purpose.PRODUCTION)


class AccountStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    PROVISIONING = "provisioning", "Provisioning"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    TEARING_DOWN = "tearing_down", "Tearing down"
    TORN_DOWN = "torn_down", "Torn down"
    WITHDRAWN = "withdrawn", "Withdrawn"


# Accounts kept only for the record: their names are free for new accounts.
RETIRED_STATUSES = (AccountStatus.TORN_DOWN, AccountStatus.WITHDRAWN)


class Account(models.Model):
    """One environment, built from one blueprint with one config."""

    # Unique among accounts not retired (constraint below): a torn-down or withdrawn
    # account is kept for the record and its name is free for a new one.
    name = models.CharField(
        max_length=40,
        validators=[RegexValidator(ACCOUNT_NAME_PATTERN, "lower-case letters, digits and dashes")],
    )
    blueprint = models.CharField(max_length=64)
    config = models.JSONField(default=dict, blank=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.QA)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="accounts"
    )
    cloud_account_id = models.CharField(max_length=32, blank=True)
    # Terraform outputs: name -> {"value", "sensitive", "type"}; sensitive values never shown.
    outputs = models.JSONField(default=dict, blank=True)
    # Per service: where its database is reached now (set by db clone / DNS cutover).
    endpoints = models.JSONField(default=dict, blank=True)
    # Terraform resources as [{address, type, values}], sensitive values as digests: what
    # parity compares (recorded at apply, or read from production's registered state).
    resources = models.JSONField(default=list, blank=True)
    # Production only: the blueprint version it runs, as registered (clones: their runs').
    registered_version = models.CharField(max_length=32, blank=True)
    status = models.CharField(
        max_length=16, choices=AccountStatus.choices, default=AccountStatus.REQUESTED
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    protected = models.BooleanField(
        default=False, help_text="Production: never torn down or written to."
    )
    # A clone that follows production (parity follow_production) and could not follow
    # its latest change: why, in words; empty when it follows.
    follow_problem = models.TextField(blank=True)
    # Set by an admin: the account never expires (no reminders, no expiry teardown).
    expiry_exempt = models.BooleanField(default=False)
    # Decommission, for the record: who asked for the teardown and why, when it ended.
    teardown_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="teardowns_requested",
    )
    teardown_reason = models.TextField(blank=True)
    torn_down_at = models.DateTimeField(null=True, blank=True)
    # The cloud account's close was refused (Organizations' quota): closed later.
    close_pending = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["owner", "status"]),
            # The lists' order and lookups by name: the unique index below is partial.
            models.Index(fields=["name", "id"], name="account_name"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=~models.Q(status__in=["torn_down", "withdrawn"]),
                name="unique_live_account_name",
                violation_error_message="an account with this name exists",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Production is always protected, whichever way it was saved (an UPDATE: below).
        if self.purpose == Purpose.PRODUCTION and not self.protected:
            self.protected = True
            update_fields = kwargs.get("update_fields")
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "protected"}
        super().save(*args, **kwargs)

    @staticmethod
    def protected_on_update() -> models.ExpressionWrapper:
        """``protected`` for an UPDATE that skips save(): the same rule as save's."""
        return models.ExpressionWrapper(
            models.Q(protected=True) | models.Q(purpose=Purpose.PRODUCTION),
            output_field=models.BooleanField(),
        )


class RequestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    AUTO_APPROVED = "auto_approved", "Auto-approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"


class AccountRequest(models.Model):
    """Who asked for which account with which config and why, and the decision."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="requests")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="account_requests"
    )
    config = models.JSONField(default=dict, blank=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    expires_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)
    # Parity rules under `enforce: warn` the config breaks, for the approver to see.
    parity_warnings = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decided_requests",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status"]),
            # The lists' order (newest first; the approvals page reads it backwards).
            models.Index(fields=["created_at", "id"], name="request_created"),
        ]

    def __str__(self) -> str:
        return f"request #{self.pk} for {self.account.name}"


class AccountSecret(models.Model):
    """A secret belonging to an account (a generated password), stored encrypted."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=200)
    ciphertext = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="unique_secret_per_account")
        ]

    def __str__(self) -> str:
        return f"{self.account.name}:{self.name}"


class ParityReport(models.Model):
    """One parity check of a clone against its production, as computed then."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="parity_reports")
    checked_at = models.DateTimeField()
    in_parity = models.BooleanField()
    # The report object, exactly as `account_parity --json` prints it.
    report = models.JSONField(default=dict)

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [models.Index(fields=["account", "-checked_at"])]

    def __str__(self) -> str:
        return f"parity of {self.account.name} at {self.checked_at:%Y-%m-%d %H:%M}"


class ExpiryReminder(models.Model):
    """A reminder sent to the owner before expiry: one per threshold and expiry date."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="expiry_reminders")
    # How long before expiry this reminder is for (e.g. 259200 for three days).
    threshold_seconds = models.PositiveIntegerField()
    # The expiry it was about: an extension gets its own reminders.
    expires_at = models.DateTimeField()
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["-sent_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "threshold_seconds", "expires_at"],
                name="one_reminder_per_threshold_and_expiry",
            )
        ]

    def __str__(self) -> str:
        return f"reminder {self.threshold_seconds}s before {self.expires_at:%Y-%m-%d %H:%M}"


class ExtensionRequest(models.Model):
    """An owner's extension of an account's expiry: applied at once within the policy's
    limit (auto-approved), else decided by an approver."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="extensions")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="extension_requests"
    )
    previous_expires_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    reason = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.PENDING
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decided_extensions",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"extension #{self.pk} of {self.account.name}"


class DriftReport(models.Model):
    """What one drift check found: the plan of the live state against the account's code."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="drift_reports")
    # The drift-check run (by its label: the records layer imports nothing of the engine).
    run = models.OneToOneField(
        "pipelines.PipelineRun", on_delete=models.CASCADE, related_name="drift_report"
    )
    checked_at = models.DateTimeField()
    drifted = models.BooleanField()
    # PlanSummary.to_dict() of the drift plan (no values, only addresses and actions).
    summary = models.JSONField(default=dict)
    notified = models.BooleanField(default=False)

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [models.Index(fields=["account", "-checked_at"])]

    def __str__(self) -> str:
        state = "drifted" if self.drifted else "no drift"
        return f"drift of {self.account.name} at {self.checked_at:%Y-%m-%d %H:%M}: {state}"
