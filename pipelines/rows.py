"""The engine's hot statements in plain SQL: a stage's claim, its locks, the next stage.

Every stage runs these; written by hand they cost one round trip each and no query
compilation. Rows become model instances through ``Model.from_db`` with each field's
own conversion, so callers get the same objects the ORM would give them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

from accounts_app.models import Account, AccountSecret
from pipelines.models import LogLine, PipelineRun, StageRun, StageStatus

M = TypeVar("M", bound=Model)

_STAGE = StageRun._meta.db_table
_RUN = PipelineRun._meta.db_table
_ACCOUNT = Account._meta.db_table
_LOG = LogLine._meta.db_table
_SECRET = AccountSecret._meta.db_table
# Rows per INSERT of log lines: far below PostgreSQL's 65535 parameters a statement.
LOG_ROWS_PER_INSERT = 1000


def _columns(model: type[Model], alias: str) -> str:
    return ", ".join(f'{alias}."{field.column}"' for field in model._meta.concrete_fields)


def _width(model: type[Model]) -> int:
    return len(model._meta.concrete_fields)


def _instance(model: type[M], values: Sequence[Any]) -> M:
    """A model instance from its concrete columns in field order, converted as the ORM does."""
    fields = model._meta.concrete_fields
    converted = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, values, strict=True)
    ]
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


def _stage_with_run(values: Sequence[Any]) -> StageRun:
    """A stage row, then its run's, then the account's: the stage with both attached."""
    stage_end = _width(StageRun)
    run_end = stage_end + _width(PipelineRun)
    stage = _instance(StageRun, values[:stage_end])
    run = _instance(PipelineRun, values[stage_end:run_end])
    run.account = _instance(Account, values[run_end : run_end + _width(Account)])
    stage.run = run
    return stage


@dataclass(frozen=True)
class Claimed:
    """A stage claimed by one statement, with what starting it needs."""

    stage: StageRun  # its run and the run's account attached
    last_log_number: int | None  # 0: no line yet; None: not read
    previous: dict[str, dict[str, Any]]  # outputs of the run's earlier succeeded stages
    # The account's secrets, encrypted (for the redactor); None: not read.
    secret_ciphertexts: list[bytes] | None


def claim_queued(*, stage_id: int, worker: str, now: datetime) -> Claimed | None:
    """Mark a queued stage of a run not asked to stop running, in one statement; None
    when it is not queued (a duplicate delivery, a takeover) or its run is cancelled.

    It locks the stage row alone, as a heartbeat does, in its own short transaction: it
    waits for nothing else while it holds it, so the lock order is kept. A cancel that
    commits first is seen here (0 rows); one that commits later sees the stage running
    and stops it through its heartbeat, as for any running stage."""
    sql = f"""
        WITH claimed AS (
            UPDATE {_STAGE} AS s
            SET status = %(running)s, started_at = %(now)s, heartbeat_at = %(now)s,
                worker = %(worker)s, process_group = NULL
            FROM {_RUN} AS r
            WHERE s.id = %(stage)s AND s.status = %(queued)s
              AND r.id = s.run_id AND NOT r.cancel_requested
            RETURNING s.*
        )
        SELECT {_columns(StageRun, "claimed")}, {_columns(PipelineRun, "r")},
               {_columns(Account, "a")},
               (SELECT max(l.number) FROM {_LOG} AS l WHERE l.stage_id = claimed.id),
               (SELECT json_object_agg(e.kind, e.outputs ORDER BY e.position)
                FROM {_STAGE} AS e
                WHERE e.run_id = claimed.run_id AND e.position < claimed.position
                  AND e.status = %(succeeded)s),
               (SELECT array_agg(k.ciphertext ORDER BY k.id) FROM {_SECRET} AS k
                WHERE k.account_id = a.id)
        FROM claimed
        JOIN {_RUN} AS r ON r.id = claimed.run_id
        JOIN {_ACCOUNT} AS a ON a.id = r.account_id
    """  # noqa: S608 - table and column names come from the models, values are parameters
    params: dict[str, str | int | datetime] = {
        "stage": stage_id,
        "now": now,
        "worker": worker,
        "running": StageStatus.RUNNING.value,
        "queued": StageStatus.QUEUED.value,
        "succeeded": StageStatus.SUCCEEDED.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    *values, last_number, previous, ciphertexts = row
    if isinstance(previous, str):
        previous = json.loads(previous)
    return Claimed(
        stage=_stage_with_run(values),
        last_log_number=last_number or 0,
        previous=dict(previous or {}),
        secret_ciphertexts=[bytes(c) for c in ciphertexts or []],
    )


def lock_stage(stage_id: int) -> StageRun | None:
    """Lock the stage's account, then its run and the stage; None if it is gone.

    Two statements: the account first, found through the stage; then the stage joined
    to its run and account, which locks the run and the stage (the account is held
    already, so no transaction that takes the account first can hold either meanwhile)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT a.id FROM {_ACCOUNT} AS a
                WHERE a.id = (SELECT r.account_id FROM {_STAGE} AS s
                              JOIN {_RUN} AS r ON r.id = s.run_id WHERE s.id = %s)
                FOR UPDATE""",  # noqa: S608 - names from the models
            [stage_id],
        )
        if cursor.fetchone() is None:
            return None
        cursor.execute(
            f"""SELECT {_columns(StageRun, "s")}, {_columns(PipelineRun, "r")},
                       {_columns(Account, "a")}
                FROM {_STAGE} AS s
                JOIN {_RUN} AS r ON r.id = s.run_id
                JOIN {_ACCOUNT} AS a ON a.id = r.account_id
                WHERE s.id = %s
                FOR UPDATE OF s, r""",  # noqa: S608 - names from the models
            [stage_id],
        )
        row = cursor.fetchone()
    return None if row is None else _stage_with_run(row)


def next_stage(*, run_id: int, after_position: int) -> StageRun | None:
    """The run's first stage after that position that is not skipped."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT {_columns(StageRun, "s")} FROM {_STAGE} AS s
                WHERE s.run_id = %s AND s.position > %s AND s.status <> %s
                ORDER BY s.position LIMIT 1""",  # noqa: S608 - names from the models
            [run_id, after_position, StageStatus.SKIPPED.value],
        )
        row = cursor.fetchone()
    return None if row is None else _instance(StageRun, row)


def save_stage(stage: StageRun) -> None:
    """Write every column of the stage, as ``stage.save()`` does (no signal listens)."""
    fields = [field for field in StageRun._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(f'"{field.column}" = %s' for field in fields)
    params = [field.get_db_prep_save(getattr(stage, field.attname), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_STAGE} SET {columns} WHERE id = %s",  # noqa: S608 - names from the model
            [*params, stage.pk],
        )


def insert_log_lines(lines: Sequence[LogLine]) -> None:
    """Log lines in one INSERT (per thousand): one statement, no transaction of its own."""
    for start in range(0, len(lines), LOG_ROWS_PER_INSERT):
        chunk = lines[start : start + LOG_ROWS_PER_INSERT]
        values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
        params: list[str | int | datetime] = []
        for line in chunk:
            params += [line.stage_id, line.attempt, line.number, line.time, line.text]
        with connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO {_LOG} ("stage_id", "attempt", "number", "time", "text") '  # noqa: S608
                f"VALUES {values}",
                params,
            )
