"""Celery tasks: thin wrappers over the engine, and the outbox relay of each worker."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from pipelines import engine, outbox, reaper, services, sweep
from pipelines.outbox import PortalTask


@shared_task(base=PortalTask, name=engine.RUN_STAGE_TASK)
def run_stage(stage_id: int) -> None:
    engine.execute_stage(stage_id)


@shared_task(base=PortalTask)
def reap() -> dict[str, int]:
    return reaper.reap()


@shared_task(base=PortalTask)
def expire_accounts() -> list[int]:
    return [run.pk for run in services.expire_accounts()]


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
