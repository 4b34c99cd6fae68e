"""Celery tasks: thin wrappers over the engine."""

from celery import shared_task

from pipelines import engine, services


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_stage(stage_id: int) -> None:
    engine.execute_stage(stage_id)


@shared_task(ignore_result=True)
def reap() -> dict[str, int]:
    return engine.reap()


@shared_task(ignore_result=True)
def expire_accounts() -> list[int]:
    return [run.pk for run in services.expire_accounts()]
