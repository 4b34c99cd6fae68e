from django.contrib import admin

from pipelines.models import Artifact, LogLine, PipelineRun, StageRun


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
