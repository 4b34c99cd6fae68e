"""The admin's view of the engine's rows: runs, stages, their log lines and files, golden
copies. All read-only: the engine alone changes them (retry, cancel and resume are on a
run's page and in the API), and a row edited by hand would break what the engine relies
on (a stage set to running with no worker, a golden copy pointing at a dropped database).
"""

from django.contrib import admin

from pipelines.models import Artifact, GoldenCopy, LogLine, PipelineRun, StageRun
from portal.admin import ReadOnlyAdmin


class StageRunInline(admin.TabularInline):
    model = StageRun
    extra = 0
    fields = ("position", "kind", "status", "attempt", "started_at", "finished_at", "explanation")
    readonly_fields = fields
    can_delete = False


@admin.register(PipelineRun)
class PipelineRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "kind", "trigger", "status", "created_at", "finished_at")
    list_filter = ("status", "kind", "trigger")
    search_fields = ("account__name",)
    inlines = [StageRunInline]


@admin.register(StageRun)
class StageRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "position", "kind", "status", "attempt", "heartbeat_at")
    list_filter = ("status", "kind")


@admin.register(LogLine)
class LogLineAdmin(ReadOnlyAdmin):
    list_display = ("stage", "number", "attempt", "time", "text")
    list_select_related = ("stage",)


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ("run", "name", "size", "sha256", "created_at")
    exclude = ("data",)


@admin.register(GoldenCopy)
class GoldenCopyAdmin(ReadOnlyAdmin):
    """Which golden copies exist, how old their data is, why a build failed."""

    list_display = (
        "id", "blueprint", "service", "status", "database", "taken_at", "ready_at", "created_at"
    )  # fmt: skip
    list_filter = ("status", "blueprint")
    search_fields = ("blueprint", "service", "database")
    ordering = ("-created_at", "-id")
