"""The Celery app. Tasks stay thin: they call services in the apps."""

import os
import signal
import threading
from types import FrameType

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# --- graceful restarts ------------------------------------------------------------------
# systemd's stop (KillMode=control-group) and ``kill -TERM -<pgid>`` send SIGTERM to the
# pool's children too, and a child dies of it with its stage half done (WorkerLostError).
# The worker's own warm shutdown already waits for running tasks, so a child busy with
# one lets SIGTERM pass; an idle child still dies of it, as before. A Python handler, not
# SIG_IGN: hooks and Terraform started by the task get the default action back at exec.
_busy = threading.Event()


@worker_process_init.connect
def install_sigterm_handler(**kwargs: object) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


@task_prerun.connect
def mark_busy(**kwargs: object) -> None:
    _busy.set()


@task_postrun.connect
def mark_idle(**kwargs: object) -> None:
    _busy.clear()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _busy.is_set():
        return  # the worker's warm shutdown lets this task finish
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
