"""What one attempt of a stage came to, as the engine records it.

``run_executor`` turns an executor's return value or exception into one of
four outcomes; ``engine._record_outcome`` matches on them. Plain data, no
database, so the mapping is tested on its own (tests/unit/test_outcomes.py).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.stages.base import StageCancelled, StageError, StageLogger, StageWaiting


@dataclass(frozen=True)
class Succeeded:
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Waiting:
    """The stage needs a human decision before the run goes on."""

    outputs: dict[str, Any]
    timeout_hours: float


@dataclass(frozen=True)
class Cancelled:
    explanation: str


@dataclass(frozen=True)
class Failed:
    explanation: str  # one line for people, already redacted
    detail: str = ""  # logged and kept on the stage, already redacted
    retryable: bool = True
    retry_from: str = ""


Outcome = Succeeded | Waiting | Cancelled | Failed


def run_executor(
    work: Callable[[], dict[str, Any]], *, log: StageLogger, redact: Callable[[str], str]
) -> Outcome:
    """Run a stage's work (its executor on its context); every exception becomes an outcome."""
    try:
        return Succeeded(work() or {})
    except StageWaiting as waiting:
        return Waiting(outputs=waiting.outputs, timeout_hours=waiting.timeout_hours)
    except StageCancelled as cancelled:
        return Cancelled(cancelled.explanation)
    except StageError as error:
        if error.detail:
            log(error.detail)
        return failed(error, redact=redact)
    except Exception as exc:  # noqa: BLE001 - any bug must still fail the stage, not leave it running
        log(traceback.format_exc())
        return failed(StageError(f"internal error: {type(exc).__name__}: {exc}"), redact=redact)


def failed(error: StageError, *, redact: Callable[[str], str]) -> Failed:
    explanation = (redact(error.explanation).splitlines() or [""])[0][:1000]
    return Failed(
        explanation=explanation or "failed",
        detail=redact(error.detail)[-4000:],
        retryable=error.retryable,
        retry_from=error.retry_from,
    )
