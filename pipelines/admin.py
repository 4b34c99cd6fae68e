from django.contrib import admin
from django.http import HttpRequest

from pipelines.models import Artifact, GoldenCopy, LogLine, PipelineRun, StageRun


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    fields = ("position", "kind", "status", "attempt", "started_at", "finished_at", "explanation")
    readonly_fields = fields
    can_delete = False


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "kind", "trigger", "status", "created_at", "finished_at")
    list_filter = ("status", "kind", "trigger")
    search_fields = ("account__name",)
    inlines = [StageRunInline]
    readonly_fields = ("config",)


@admin.register(StageRun)
class StageRunAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "position", "kind", "status", "attempt", "heartbeat_at")
    list_filter = ("status", "kind")


@admin.register(LogLine)
class LogLineAdmin(admin.ModelAdmin):
    list_display = ("stage", "number", "attempt", "time", "text")
    list_select_related = ("stage",)


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("run", "name", "size", "sha256", "created_at")
    exclude = ("data",)


@admin.register(GoldenCopy)
class GoldenCopyAdmin(admin.ModelAdmin):
    """Golden copies are built, frozen and retired by the pipeline alone
    (``pipelines.dbclone.golden_store``): here operators see which exist, how old their
    data is and why a build failed, and change nothing (a row edited or deleted by hand
    would leave its database behind, or point accounts at one that is gone)."""

    list_display = (
        "id", "blueprint", "service", "status", "database", "taken_at", "ready_at", "created_at"
    )  # fmt: skip
    list_filter = ("status", "blueprint")
    search_fields = ("blueprint", "service", "database")
    ordering = ("-created_at", "-id")
    readonly_fields = (
        "blueprint", "service", "target", "rules_digest", "database", "role", "status",
        "taken_at", "table_counts", "error", "created_at", "ready_at",
    )  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GoldenCopy | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GoldenCopy | None = None) -> bool:
        return False
