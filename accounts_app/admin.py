from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts_app.models import Account, AccountRequest, AccountSecret
from pipelines.models import RunKind
from pipelines.services import RunRefused, start_run


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
            f"{name} = {'(sensitive)' if out.get('sensitive') else out.get('value')!r}"
            for name, out in sorted(obj.outputs.items())
        )

    def _start(self, request: HttpRequest, queryset: QuerySet[Account], kind: str) -> None:
        for account in queryset:
            try:
                run = start_run(account, kind, user=request.user)  # type: ignore[arg-type]
            except (RunRefused, Exception) as exc:  # noqa: BLE001 - shown to the admin per account
                self.message_user(request, f"{account.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{account.name}: started run #{run.pk}")

    @admin.action(description="Start a provision run")
    def provision(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._start(request, queryset, RunKind.PROVISION)

    @admin.action(description="Start an update run")
    def update(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        self._start(request, queryset, RunKind.UPDATE)


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
