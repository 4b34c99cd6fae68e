"""Log lines as JSON (PORTAL_LOG_FORMAT=json), each with the run and stage it concerns.

The ids come from the record (``logger.info(..., extra={"run_id": run.pk})``) or from
the current context: ``log_context(run_id=..., stage_id=...)``, which the Celery
signals below set for the duration of every ``run_stage`` task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime

from celery.signals import task_postrun, task_prerun

ID_FIELDS = ("run_id", "stage_id")
STAGE_TASK = "pipelines.tasks.run_stage"

_ids: ContextVar[dict[str, int] | None] = ContextVar("portal_log_ids", default=None)


def current_ids() -> dict[str, int]:
    return dict(_ids.get() or {})


@contextmanager
def log_context(**ids: int) -> Iterator[None]:
    """Add ``ids`` (run_id, stage_id) to every line logged inside the block."""
    token = _ids.set({**current_ids(), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(current_ids())
        for field in ID_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# The stage id of the running task, for the lines its stage logs (one task at a time per
# worker process, so a module-level token is enough).
_task_token: list[Token[dict[str, int] | None]] = []


def _on_task_prerun(*, task_id: str, task: object, args: tuple[object, ...] = (),
                    kwargs: dict[str, object] | None = None, **_: object) -> None:  # fmt: skip
    if getattr(task, "name", "") != STAGE_TASK:
        return
    stage_id = (kwargs or {}).get("stage_id", args[0] if args else None)
    if isinstance(stage_id, int):
        _task_token.append(_ids.set({**current_ids(), "stage_id": stage_id}))


def _on_task_postrun(*, task: object, **_: object) -> None:
    if getattr(task, "name", "") == STAGE_TASK and _task_token:
        _ids.reset(_task_token.pop())


def connect_signals() -> None:
    task_prerun.connect(_on_task_prerun, weak=False)
    task_postrun.connect(_on_task_postrun, weak=False)
