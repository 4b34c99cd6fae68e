"""``{{ run|duration }}``, ``{{ stage|duration }}``: how long it took (so far, while it runs)."""

from __future__ import annotations

from django import template

from pipelines.models import PipelineRun, StageRun
from pipelines.timeline import format_duration

register = template.Library()


@register.filter
def duration(item: PipelineRun | StageRun) -> str:
    seconds = item.duration_seconds
    return "—" if seconds is None else format_duration(seconds)
