"""A stage's log: numbered, timestamped lines, redacted, written as they come.

A burst of lines (a Terraform command's output, the engine's header and a stage's
first line) can be kept and written in one INSERT: ``hold()`` keeps lines in memory,
``flush()`` writes those kept so far, ``release()`` writes them and stops keeping.
Every line keeps the number and time it was logged with, so the order and the times
shown are those of the calls, whoever writes them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from django.db.models import Max
from django.utils import timezone

from pipelines.dbretry import retrying
from pipelines.models import LogLine
from pipelines.redaction import Redactor
from pipelines.rows import insert_log_lines

MAX_LINE_LENGTH = 8000


class StageLog:
    """Callable logger for one stage attempt. Safe to call from several threads.

    ``last_number``: the stage's highest line number so far, when the caller read it
    already (the claim does); else it is read here."""

    def __init__(
        self, stage_id: int, attempt: int, redactor: Redactor, *, last_number: int | None = None
    ) -> None:
        self.stage_id = stage_id
        self.attempt = attempt
        self.redact = redactor
        self._lock = threading.Lock()
        if last_number is None:
            last_number = retrying(
                lambda: LogLine.objects.filter(stage_id=stage_id).aggregate(n=Max("number"))["n"],
                what=f"log of stage {stage_id}",
            )
        self._next = (last_number or 0) + 1
        self._held: list[LogLine] = []
        self._holding = False
        self._until_next_line = False

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
            if self._holding and not (self._until_next_line and self._held):
                self._held.extend(rows)
                return
            rows, self._held = [*self._held, *rows], []
            self._holding = self._until_next_line = False
            self._write(rows)

    def hold(self, *, until_next_line: bool = False, kept: Sequence[LogLine] | None = None) -> None:
        """Keep the lines logged from now on until ``release()``. With ``until_next_line``
        the first line kept goes out with the one after it (or the next flush). ``kept``:
        lines taken with ``take_held()``, to be written first, in place of any kept now."""
        with self._lock:
            if kept is not None:
                self._held = list(kept)
            self._holding = True
            self._until_next_line = until_next_line

    def flush(self) -> None:
        """Write the kept lines, in one INSERT; a ``hold()`` goes on (one until the next
        line ends)."""
        with self._lock:
            self._holding = self._holding and not self._until_next_line
            self._until_next_line = False
            rows, self._held = self._held, []
            if rows:
                self._write(rows)

    def release(self) -> None:
        """Write the kept lines and stop keeping lines."""
        with self._lock:
            self._holding = self._until_next_line = False
            rows, self._held = self._held, []
            if rows:
                self._write(rows)

    def take_held(self) -> list[LogLine]:
        """Stop keeping lines; the kept ones, unwritten, for a caller that writes them in
        its own transaction (``hold(kept=...)`` there, so a try again writes them again)."""
        with self._lock:
            rows, self._held = self._held, []
            self._holding = self._until_next_line = False
            return rows

    def _write(self, rows: list[LogLine]) -> None:
        # A dropped connection must not fail the stage that logs. One statement, with no
        # transaction of its own (bulk_create would open one).
        retrying(lambda: insert_log_lines(rows), what=f"log of stage {self.stage_id}")
