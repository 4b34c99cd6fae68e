"""Workers and beat record when they were last alive; /healthz reports it.

A worker records at start (``worker_ready``), then with its event heartbeat
(``heartbeat_sent``, every 2 s, so a worker whose slots are all busy with long stages
still counts as alive) and after each task it runs (the reaper every
PORTAL_REAPER_SECONDS: brokers without events, like the local SQLite one, send no
event heartbeats); written at most every RECORD_EVERY_SECONDS. Beat records
at start and whenever it sends a scheduled task (the reaper runs every
PORTAL_REAPER_SECONDS). Connected by portal.apps.PortalConfig.ready.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from celery import Task
from celery.signals import (
    after_task_publish,
    beat_init,
    heartbeat_sent,
    task_postrun,
    worker_ready,
)
from django.db import DatabaseError, connection
from django.utils import timezone

from portal.models import Component, Heartbeat

logger = logging.getLogger(__name__)

RECORD_EVERY_SECONDS = 10.0

_last_recorded: dict[Component, float] = {}
_in_beat = False  # set in the beat process, whose task sends are its sign of life


def record(component: Component) -> None:
    """Write now as ``component``'s last heartbeat."""
    Heartbeat.objects.update_or_create(component=component, defaults={"at": timezone.now()})


def last_heartbeats() -> dict[Component, datetime | None]:
    found = dict(Heartbeat.objects.values_list("component", "at"))
    return {component: found.get(component) for component in Component}


def _record_quietly(component: Component, *, force: bool = False) -> None:
    """Record from a Celery signal: at most every RECORD_EVERY_SECONDS, never raising.

    A database outage must not stop the worker or beat; /healthz shows it anyway.
    """
    now = time.monotonic()
    if not force and now - _last_recorded.get(component, -RECORD_EVERY_SECONDS) < (
        RECORD_EVERY_SECONDS
    ):
        return
    _last_recorded[component] = now
    try:
        record(component)
    except DatabaseError as error:
        logger.warning("could not record the %s heartbeat: %s", component, error)
        if not connection.in_atomic_block:
            connection.close()  # a dropped connection: the next beat opens a new one


def _on_worker_ready(**_: object) -> None:
    _record_quietly(Component.WORKER, force=True)


def _on_heartbeat_sent(**_: object) -> None:
    _record_quietly(Component.WORKER)


def _on_task_postrun(*, task: Task, **_: object) -> None:
    if not task.request.is_eager:  # run by a worker, not in-process
        _record_quietly(Component.WORKER)


def _on_beat_init(**_: object) -> None:
    global _in_beat
    _in_beat = True
    _record_quietly(Component.BEAT, force=True)


def _on_task_published(**_: object) -> None:
    if _in_beat:
        _record_quietly(Component.BEAT)


def connect_signals() -> None:
    worker_ready.connect(_on_worker_ready, weak=False)
    heartbeat_sent.connect(_on_heartbeat_sent, weak=False)
    task_postrun.connect(_on_task_postrun, weak=False)
    beat_init.connect(_on_beat_init, weak=False)
    after_task_publish.connect(_on_task_published, weak=False)
