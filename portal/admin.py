"""What the apps' admins share."""

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the portal writes (a run's stages, a report, a reminder sent): shown, and
    never added, edited or deleted here, so the record stays true. An account that has
    such rows cannot be deleted here either (Django asks for the right to delete them):
    it is torn down, and its history kept."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
