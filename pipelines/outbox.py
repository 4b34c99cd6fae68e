"""The outbox: a task is sent after the transaction that decided it commits, and is
never lost to a broker outage.

``send_after_commit(task_name, *args)`` writes the message in the current transaction.
After the commit one send is tried; a broker error is logged, never raised to the user
whose change was recorded. The ``Relay`` (a thread in each worker process; the broker
cannot carry a periodic task while it is down) sends what is left every few seconds.

A row is locked while it is sent (``SKIP LOCKED``), so the after-commit send and the
relays of several workers never send one row twice at once. A crash between the send
and the mark sends it again: delivery is at least once, and the tasks are written for
that (a stage task finds its stage no longer queued).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from celery import Task, current_app
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from pipelines.models import OutboxMessage
from pipelines.periodic import PeriodicThread

logger = logging.getLogger(__name__)

# What a task may carry: JSON, as the broker and the outbox row both store it.
TaskArg = str | int | float | bool | None | list[str]

_TABLE = OutboxMessage._meta.db_table
_ARGS = OutboxMessage._meta.get_field("args")
RELAY_SECONDS = 2.0
RELAY_BATCH = 100


class PortalTask(Task):
    """The portal's task base: acknowledged after it ran, so a lost worker's task is
    delivered again; results are never stored; sent through the outbox."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    def delay_on_commit(self, *args: TaskArg) -> None:
        """Send this task once the current transaction commits; never lost, never raises."""
        if self.app.conf.task_always_eager:
            # Celery's eager mode has no broker, hence no outbox: run it here after commit.
            transaction.on_commit(lambda: self.delay(*args), robust=True)
            return
        send_after_commit(self.name, *args)


def send_after_commit(task_name: str, *args: TaskArg) -> None:
    """Record the message now (in the caller's transaction); try to send it after commit."""
    # One plain INSERT: every stage of every run comes this way.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_TABLE} (task, args, created_at, attempts, last_error) "  # noqa: S608
            "VALUES (%s, %s, %s, 0, '') RETURNING id",
            [task_name, _ARGS.get_db_prep_save(list(args), connection), timezone.now()],
        )
        (message_id,) = cursor.fetchone()
    transaction.on_commit(lambda: send(message_id), robust=True)


def send(message_id: int) -> bool:
    """Send one message unless it is sent or being sent; False if the broker refused.

    The row is marked sent and locked by one statement, the message goes to the broker,
    the mark commits; a refusal rolls the mark back, then the attempt is recorded. The
    commit does not wait for the disk: a mark lost with the database server's crash only
    sends the message again, which at-least-once delivery allows for anyway."""
    with transaction.atomic():
        marked = _mark_sent(message_id)
        if marked is None:
            return False
        task, task_args = marked
        error = _send_task(task=task, args=task_args)
        if error is not None:
            transaction.set_rollback(True)
    if error is not None:
        _record_refusal(message_id=message_id, error=error)
        return False
    return True


def _mark_sent(message_id: int) -> tuple[str, list[TaskArg]] | None:
    """Mark the message sent, if it is unsent and no one else is sending it (locked till
    the caller's transaction ends): its task and arguments, else None. The row it marks
    also sets ``synchronous_commit`` off for the rest of the transaction (``SET LOCAL``,
    in the same statement: one round trip fewer)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_TABLE} SET attempts = attempts + 1, sent_at = %s WHERE id = ("  # noqa: S608
            f"SELECT id FROM {_TABLE} WHERE id = %s AND sent_at IS NULL"
            " AND set_config('synchronous_commit', 'off', true) = 'off'"
            " FOR UPDATE SKIP LOCKED) RETURNING task, args",
            [timezone.now(), message_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    task, args = row
    # jsonb comes as text through Django's connection.
    return str(task), list(json.loads(args) if isinstance(args, str) else args)


def _send_task(*, task: str, args: list[TaskArg]) -> Exception | None:
    """Give the task to the broker: None, or the error it refused it with."""
    try:
        # retry=False: fail at once when the broker is down; the relay tries again.
        # By name: the sending process need not have imported the task's module.
        current_app.send_task(task, args=args, retry=False)
    except Exception as exc:  # noqa: BLE001 - kombu, redis and socket errors alike; the row stays
        return exc
    return None


def _record_refusal(*, message_id: int, error: Exception) -> None:
    OutboxMessage.objects.filter(pk=message_id).update(
        attempts=F("attempts") + 1, last_error=f"{type(error).__name__}: {error}"[:1000]
    )
    logger.warning("outbox: could not send #%s: %s", message_id, error)


def relay(*, limit: int = RELAY_BATCH) -> int:
    """Send unsent messages, oldest first, until the broker refuses one; how many went."""
    sent = 0
    with transaction.atomic():
        pending = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
            sent_at__isnull=True
        )
        for message in pending.order_by("created_at", "pk")[:limit]:
            if not _publish(message):
                break
            sent += 1
    return sent


def prune(*, sent_before: datetime) -> int:
    """Forget messages sent before this time."""
    deleted, _ = OutboxMessage.objects.filter(sent_at__lt=sent_before).delete()
    return deleted


def _publish(message: OutboxMessage) -> bool:
    """Send a message the caller holds locked, and mark it sent (the relay's way)."""
    error = _send_task(task=message.task, args=message.args)
    if error is not None:
        _record_refusal(message_id=message.pk, error=error)
        return False
    message.attempts += 1
    message.sent_at = timezone.now()
    message.save(update_fields=["attempts", "sent_at"])
    return True


def broker_reachable() -> bool:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    except Exception:  # noqa: BLE001 - any failure to connect means "not now"
        return False
    return True


class Relay(PeriodicThread):
    """Sends what the outbox holds every few seconds, in a daemon thread.

    ``on_broker_back`` is called when the broker answers again after failing: a broker
    that keeps nothing on disk lost the messages it held, and the caller sends them again.
    """

    def __init__(
        self, *, on_broker_back: Callable[[], object], interval: float = RELAY_SECONDS
    ) -> None:
        super().__init__(name="outbox-relay", interval=interval)
        self.on_broker_back = on_broker_back
        # At start too: a worker that starts may follow a broker that restarted empty.
        self._broker_was_down = True

    def tick(self) -> None:
        if not broker_reachable():
            self._broker_was_down = True
            return
        if self._broker_was_down:
            logger.info("outbox: the broker answers; sending queued stages again")
            self.on_broker_back()
            self._broker_was_down = False
        relay()
