"""The run page's timeline: one bar per stage across time, coloured by status.

A pure function of the stages' times and statuses (no query, no clock of its
own), so it is drawn on the server and tested without a browser. Positions are
percentages of the run's span, so the picture scales to any width.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pipelines.models import StageStatus

# A bar is never drawn narrower than this, so a stage of a few milliseconds stays visible.
MIN_WIDTH_PERCENT = 0.8
ACTIVE_STATUSES = (StageStatus.QUEUED, StageStatus.RUNNING, StageStatus.WAITING_APPROVAL)


class StageLike(Protocol):
    kind: str
    status: str
    attempt: int
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Bar:
    label: str
    status: str
    left: float  # percent of the span
    width: float  # percent of the span; 0 when the stage has not started
    duration: str  # "1m 05s", "" when not started
    title: str  # tooltip text

    @property
    def drawn(self) -> bool:
        return self.width > 0


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    start: datetime | None
    end: datetime | None

    @property
    def total(self) -> str:
        if self.start is None or self.end is None:
            return ""
        return format_duration((self.end - self.start).total_seconds())


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _begin(stage: StageLike) -> datetime | None:
    return stage.started_at or stage.queued_at


def build_timeline(
    stages: Iterable[StageLike], *, now: datetime, start: datetime | None = None
) -> Timeline:
    """Bars for the stages, in the given order; an active stage runs up to ``now``.

    ``start`` (the run's creation) anchors the left edge, so a stage retried later shows
    where it ran again rather than as if the run had begun then.
    """
    stages = list(stages)
    spans: list[tuple[StageLike, datetime | None, datetime | None]] = []
    for stage in stages:
        begin = _begin(stage)
        end: datetime | None = None
        if begin is not None:
            if stage.status in ACTIVE_STATUSES or stage.finished_at is None:
                end = max(now, begin)
            else:
                end = max(stage.finished_at, begin)
        spans.append((stage, begin, end))

    begins = [b for _, b, _ in spans if b is not None]
    ends = [e for _, _, e in spans if e is not None]
    if not begins:
        return Timeline(
            bars=tuple(
                Bar(s.kind, s.status, 0.0, 0.0, "", f"{s.kind}: {s.status}") for s in stages
            ),
            start=None,
            end=None,
        )
    start = min([*begins, start] if start is not None else begins)
    end = max(ends)
    span = max((end - start).total_seconds(), 1e-9)
    bars = []
    for stage, begin, finish in spans:
        if begin is None or finish is None:
            bars.append(
                Bar(stage.kind, stage.status, 0.0, 0.0, "", f"{stage.kind}: {stage.status}")
            )
            continue
        seconds = (finish - begin).total_seconds()
        left = (begin - start).total_seconds() / span * 100
        width = max(seconds / span * 100, MIN_WIDTH_PERCENT)
        left = min(left, 100 - width)  # keep a minimum-width bar inside the track
        duration = format_duration(seconds)
        attempt = f", attempt {stage.attempt}" if stage.attempt > 1 else ""
        bars.append(
            Bar(
                label=stage.kind,
                status=stage.status,
                left=round(left, 2),
                width=round(width, 2),
                duration=duration,
                title=f"{stage.kind}: {stage.status}{attempt}, {duration}",
            )
        )
    return Timeline(bars=tuple(bars), start=start, end=end)
