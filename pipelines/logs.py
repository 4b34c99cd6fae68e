"""A stage's log: numbered, timestamped lines, redacted, written as they come."""

from __future__ import annotations

import threading

from django.db.models import Max
from django.utils import timezone

from pipelines.dbretry import retrying
from pipelines.models import LogLine
from pipelines.redaction import Redactor

MAX_LINE_LENGTH = 8000


class StageLog:
    """Callable logger for one stage attempt. Safe to call from several threads."""

    def __init__(self, stage_id: int, attempt: int, redactor: Redactor) -> None:
        self.stage_id = stage_id
        self.attempt = attempt
        self.redact = redactor
        self._lock = threading.Lock()
        last = retrying(
            lambda: LogLine.objects.filter(stage_id=stage_id).aggregate(n=Max("number"))["n"],
            what=f"log of stage {stage_id}",
        )
        self._next = (last or 0) + 1

    def __call__(self, text: str) -> None:
        lines = self.redact(str(text)).splitlines() or [""]
        with self._lock:
            now = timezone.now()
            rows = []
            for line in lines:
                rows.append(
                    LogLine(
                        stage_id=self.stage_id,
                        attempt=self.attempt,
                        number=self._next,
                        time=now,
                        text=line[:MAX_LINE_LENGTH],
                    )
                )
                self._next += 1
            # A dropped connection must not fail the stage that logs. One line (the usual
            # case) is one INSERT; bulk_create would wrap it in a transaction of its own.
            retrying(
                lambda: (
                    rows[0].save(force_insert=True)
                    if len(rows) == 1
                    else LogLine.objects.bulk_create(rows)
                ),
                what=f"log of stage {self.stage_id}",
            )
