"""Celery tasks: thin wrappers over the engine, and the outbox relay of each worker."""

from __future__ import annotations

import logging
import time

from celery import Task, current_app, shared_task
from celery.signals import task_postrun, task_prerun, worker_ready, worker_shutdown
from django.db import close_old_connections

from pipelines import engine, outbox, reaper, services, sweep
from pipelines.dbclone import golden_store
from pipelines.outbox import PortalTask

logger = logging.getLogger(__name__)

BENCH_HOP_TASK = "pipelines.tasks.bench_hop"


@shared_task(base=PortalTask, name=engine.RUN_STAGE_TASK)
def run_stage(stage_id: int) -> None:
    engine.execute_stage(stage_id)


@shared_task(base=PortalTask)
def reap() -> dict[str, int]:
    return reaper.reap()


@shared_task(base=PortalTask)
def expire_accounts() -> list[int]:
    return [run.pk for run in services.expire_accounts()]


@shared_task(name=BENCH_HOP_TASK, ignore_result=True)
def bench_hop(remaining: int) -> None:
    """A bare Celery hop for ``bench_pipeline``: log the time, send the next one. No database,
    so the chain measures the broker and the worker alone, beside the stage gaps."""
    logger.info("bench hop %d at %.6f", remaining, time.time())
    if remaining > 0:
        current_app.send_task(BENCH_HOP_TASK, args=[remaining - 1])


@shared_task(base=PortalTask)
def refresh_golden_copies() -> list[int]:
    """Rebuild every golden copy past half its maximum age (Celery beat)."""
    return [copy.pk for copy in golden_store.refresh_due()]


@shared_task(base=PortalTask)
def close_pending_accounts() -> list[str]:
    """Cloud accounts whose close AWS's quota refused: closed now if the quota allows."""
    return sweep.close_pending_accounts()


# A broker that restarted empty lost the queued stages' messages: send them again.
_relay = outbox.Relay(on_broker_back=reaper.resend_queued)


@worker_ready.connect
def start_outbox_relay(**kwargs: object) -> None:
    _relay.start()


@worker_shutdown.connect
def stop_outbox_relay(**kwargs: object) -> None:
    _relay.stop()


# --- database connections ---------------------------------------------------------------
# The worker keeps its connection between tasks (CELERY_DB_REUSE_MAX) and treats each task
# as Django treats a request: before and after, a connection past CONN_MAX_AGE or left
# broken is closed, and the next query checks the kept one first (CONN_HEALTH_CHECKS), so
# a backend killed while the worker was idle (a failover) costs one reconnect, not a stage.


@task_prerun.connect
def check_connections_before_task(*, task: Task, **kwargs: object) -> None:
    _check_connections(task)


@task_postrun.connect
def check_connections_after_task(*, task: Task, **kwargs: object) -> None:
    _check_connections(task)


def _check_connections(task: Task) -> None:
    # An eager task runs inside its caller (a test's transaction): its connection is not ours.
    if not task.request.is_eager:
        close_old_connections()
