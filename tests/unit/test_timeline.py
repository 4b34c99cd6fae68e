"""The run timeline: bars placed across the run's span, coloured by status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.timeline import MIN_WIDTH_PERCENT, build_timeline, format_duration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeStage:
    kind: str
    status: str
    attempt: int = 1
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_bars_are_placed_in_proportion_to_time() -> None:
    stages = [
        FakeStage("pre_hooks", "succeeded", started_at=at(0), finished_at=at(10)),
        FakeStage("render", "succeeded", started_at=at(10), finished_at=at(40)),
        FakeStage("plan", "failed", started_at=at(40), finished_at=at(100)),
    ]

    timeline = build_timeline(stages, now=at(500))

    assert [(b.left, b.width) for b in timeline.bars] == [(0, 10), (10, 30), (40, 60)]
    assert [b.status for b in timeline.bars] == ["succeeded", "succeeded", "failed"]
    assert timeline.start == at(0) and timeline.end == at(100)
    assert timeline.total == "1m 40s"
    assert timeline.bars[2].title == "plan: failed, 1m 00s"


def test_a_running_stage_extends_to_now_and_pending_ones_have_no_bar() -> None:
    stages = [
        FakeStage("render", "succeeded", started_at=at(0), finished_at=at(20)),
        FakeStage("plan", "running", started_at=at(20)),
        FakeStage("apply", "pending"),
    ]

    timeline = build_timeline(stages, now=at(80))

    render, plan, apply = timeline.bars
    assert (render.left, render.width) == (0, 25)
    assert (plan.left, plan.width) == (25, 75)
    assert plan.duration == "1m 00s"
    assert not apply.drawn and apply.duration == ""


def test_a_queued_stage_starts_at_its_queue_time() -> None:
    stages = [
        FakeStage("render", "succeeded", started_at=at(0), finished_at=at(10)),
        FakeStage("plan", "queued", queued_at=at(10)),
    ]

    timeline = build_timeline(stages, now=at(20))

    assert (timeline.bars[1].left, timeline.bars[1].width) == (50, 50)


def test_an_instant_stage_stays_visible_inside_the_track() -> None:
    stages = [
        FakeStage("render", "succeeded", started_at=at(0), finished_at=at(100)),
        FakeStage("approve_plan", "succeeded", started_at=at(100), finished_at=at(100)),
    ]

    bar = build_timeline(stages, now=at(100)).bars[1]

    assert bar.width == MIN_WIDTH_PERCENT
    assert bar.left + bar.width <= 100


def test_the_run_start_anchors_the_left_edge() -> None:
    retried = FakeStage("pre_hooks", "succeeded", attempt=2, started_at=at(30), finished_at=at(40))

    timeline = build_timeline([retried], now=at(50), start=at(0))

    assert (timeline.bars[0].left, timeline.bars[0].width) == (75, 25)
    assert timeline.start == at(0) and timeline.total == "40s"


def test_nothing_started_gives_empty_bars() -> None:
    timeline = build_timeline([FakeStage("render", "pending")], now=T0)

    assert timeline.start is None and timeline.total == ""
    assert [b.drawn for b in timeline.bars] == [False]


def test_the_attempt_shows_in_the_title_after_a_retry() -> None:
    stage = FakeStage("pre_hooks", "succeeded", attempt=2, started_at=at(0), finished_at=at(3))

    assert build_timeline([stage], now=at(9)).bars[0].title == "pre_hooks: succeeded, attempt 2, 3s"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (65, "1m 05s"), (3600 + 120, "1h 02m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
