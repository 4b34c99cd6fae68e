"""The Django admin: browsing and editing rows; its actions go through the workflow."""

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts_app import selectors, services
from accounts_app.models import Account, AccountRequest, AccountSecret
from pipelines.models import RunKind
from portal.errors import PortalError
from portal.web_errors import error_text


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("name", "blueprint", "purpose", "owner", "status", "expires_at", "protected")
    list_filter = ("status", "purpose", "blueprint", "protected")
    search_fields = ("name", "cloud_account_id", "owner__username")
    readonly_fields = ("outputs_summary", "endpoints", "created_at", "updated_at")
    exclude = ("outputs",)
    actions = ["provision", "update"]

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
class AccountRequestAdmin(admin.ModelAdmin):
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
class AccountSecretAdmin(admin.ModelAdmin):
    """Names only: the encrypted value is never shown."""

    list_display = ("account", "name", "updated_at")
    fields = ("account", "name", "created_at", "updated_at")
    readonly_fields = ("account", "name", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
