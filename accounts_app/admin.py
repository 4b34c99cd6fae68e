"""The Django admin: browsing and editing rows; its actions go through the workflow."""

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts_app import production, selectors, services
from accounts_app.models import (
    Account,
    AccountRequest,
    AccountSecret,
    DriftReport,
    ExpiryReminder,
    ExtensionRequest,
    ParityReport,
    Purpose,
)
from pipelines.models import RunKind
from portal.admin import ReadOnlyAdmin
from portal.errors import PortalError
from portal.web_errors import error_text


class AccountAdminForm(forms.ModelForm):
    """An account; with purpose production it is registered (production.register_production)."""

    state_file = forms.FileField(
        required=False,
        help_text="Production only: the output of `terraform show -json` of its state.",
    )

    class Meta:
        model = Account
        fields = (
            "name",
            "blueprint",
            "config",
            "purpose",
            "owner",
            "cloud_account_id",
            "expires_at",
            "protected",
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        self.production_state: Any = None
        if data.get("purpose") != Purpose.PRODUCTION:
            return data
        if self.instance.pk and self.instance.purpose != Purpose.PRODUCTION:
            self.add_error("purpose", "a clone cannot become production; register it anew")
            return data
        upload = data.get("state_file")
        if upload:
            try:
                self.production_state = json.loads(upload.read())
            except ValueError as exc:
                self.add_error("state_file", f"not JSON: {exc}")
                return data
        try:
            production.check_registration(
                name=data.get("name"),
                blueprint=data.get("blueprint") or "",
                config=data.get("config"),
                state=self.production_state,
                cloud_account_id=data.get("cloud_account_id") or "",
            )
        except production.RegistrationInvalid as exc:
            for field, message in exc.problems:
                target = "state_file" if field == "state" else field
                self.add_error(target if target in self.fields else None, message)
        return data


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    form = AccountAdminForm
    list_display = (
        "name", "blueprint", "purpose", "owner", "status", "expires_at", "expiry_exempt",
        "protected",
    )  # fmt: skip
    list_filter = ("status", "purpose", "blueprint", "protected", "expiry_exempt")
    search_fields = ("name", "cloud_account_id", "owner__username")
    # The status is the workflow's: set by hand it could start a run no approver allowed.
    readonly_fields = (
        "status", "outputs_summary", "endpoints", "follow_problem", "created_at", "updated_at"
    )  # fmt: skip
    actions = ["provision", "update"]

    def save_model(
        self, request: HttpRequest, obj: Account, form: forms.ModelForm, change: bool
    ) -> None:
        if obj.purpose != Purpose.PRODUCTION:
            super().save_model(request, obj, form, change)
            return
        # Production is registered as it is: ready, protected, no run.
        account, _ = production.register_production(
            name=obj.name,
            blueprint=obj.blueprint,
            config=obj.config,
            state=getattr(form, "production_state", None),
            cloud_account_id=obj.cloud_account_id,
            owner=obj.owner,
        )
        obj.pk = account.pk
        obj.refresh_from_db()

    @admin.display(description="Outputs (sensitive values hidden)")
    def outputs_summary(self, obj: Account) -> str:
        return ", ".join(
            f"{name} = {'(sensitive)' if out['sensitive'] else out['value']!r}"
            for name, out in selectors.public_outputs(obj).items()
        )

    def _start(self, request: HttpRequest, *, accounts: QuerySet[Account], kind: RunKind) -> None:
        """Start a run on each account through the request workflow, as the portal would."""
        user: User = request.user  # type: ignore[assignment]  # the admin requires staff
        for account in accounts:
            try:
                run = services.start_account_run(account=account, kind=kind, user=user)
            except PortalError as exc:
                self.message_user(request, f"{account.name}: {error_text(exc)}", messages.ERROR)
            else:
                self.message_user(request, f"{account.name}: started run #{run.pk}")

    @admin.action(description="Start a provision run")
    def provision(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._start(request, accounts=queryset, kind=RunKind.PROVISION)

    @admin.action(description="Start an update run")
    def update(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._start(request, accounts=queryset, kind=RunKind.UPDATE)


@admin.register(AccountRequest)
class AccountRequestAdmin(ReadOnlyAdmin):
    """Decided on the approvals page or through the API only, where four eyes are checked
    (an approver other than the requester): an edit here could approve one's own request."""

    list_display = (
        "id",
        "account",
        "requested_by",
        "purpose",
        "status",
        "decided_by",
        "created_at",
    )
    list_filter = ("status", "purpose")


@admin.register(AccountSecret)
class AccountSecretAdmin(ReadOnlyAdmin):
    """Names only: the encrypted value is never shown; stages alone store and delete them."""

    list_display = ("account", "name", "updated_at")
    fields = ("account", "name", "created_at", "updated_at")


@admin.register(ParityReport)
class ParityReportAdmin(ReadOnlyAdmin):
    """Reports are computed (account_parity, the schedule), never edited."""

    list_display = ("account", "checked_at", "in_parity")
    list_filter = ("in_parity",)


@admin.register(ExpiryReminder)
class ExpiryReminderAdmin(ReadOnlyAdmin):
    list_display = ("account", "threshold_seconds", "expires_at", "sent_at")


@admin.register(ExtensionRequest)
class ExtensionRequestAdmin(ReadOnlyAdmin):
    list_display = ("account", "requested_by", "expires_at", "status", "decided_by")
    list_filter = ("status",)


@admin.register(DriftReport)
class DriftReportAdmin(ReadOnlyAdmin):
    list_display = ("account", "run", "checked_at", "drifted", "notified")
    list_filter = ("drifted",)
