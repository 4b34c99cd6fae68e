"""What an executor's return or exception becomes: the engine's four outcomes."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.outcomes import Cancelled, Failed, Succeeded, Waiting, run_executor
from pipelines.stages.base import StageCancelled, StageError, StageWaiting

SECRET = "hunter2-secret"


def redact(text: str) -> str:
    return text.replace(SECRET, "[redacted]")


def outcome_of(work: Any, logged: list[str] | None = None) -> Any:
    lines = [] if logged is None else logged
    return run_executor(work, log=lines.append, redact=redact)


def test_outputs_are_a_success() -> None:
    assert outcome_of(lambda: {"a": 1}) == Succeeded({"a": 1})
    assert outcome_of(lambda: None) == Succeeded({})


def test_waiting_keeps_outputs_and_deadline() -> None:
    def wait() -> dict[str, Any]:
        raise StageWaiting({"plan": "x"}, timeout_hours=2)

    assert outcome_of(wait) == Waiting(outputs={"plan": "x"}, timeout_hours=2)


def test_cancelled_is_not_a_failure() -> None:
    def cancel() -> dict[str, Any]:
        raise StageCancelled("stopped at a check")

    assert outcome_of(cancel) == Cancelled("stopped at a check")


def test_a_stage_error_is_redacted_logged_and_keeps_its_retry_hints() -> None:
    def fail() -> dict[str, Any]:
        raise StageError(
            f"apply failed with {SECRET}\nsecond line",
            retryable=False,
            detail=f"tail of output: {SECRET}",
            retry_from="plan",
        )

    logged: list[str] = []
    outcome = outcome_of(fail, logged)

    assert outcome == Failed(
        explanation="apply failed with [redacted]",
        detail="tail of output: [redacted]",
        retryable=False,
        retry_from="plan",
    )
    assert logged == [f"tail of output: {SECRET}"]  # the stage's logger redacts on its own


def test_any_other_exception_is_an_internal_error_with_its_traceback_logged() -> None:
    def crash() -> dict[str, Any]:
        raise KeyError(SECRET)

    logged: list[str] = []
    outcome = outcome_of(crash, logged)

    assert isinstance(outcome, Failed)
    assert outcome.explanation == "internal error: KeyError: '[redacted]'"
    assert outcome.retryable
    assert "Traceback" in logged[0]


@pytest.mark.parametrize("explanation", ["", "\n"])
def test_an_empty_explanation_says_failed(explanation: str) -> None:
    def fail() -> dict[str, Any]:
        raise StageError(explanation)

    assert outcome_of(fail) == Failed(explanation="failed")
