"""The Celery app. Tasks stay thin: they call services in the apps."""

import gc
import os
import signal
from collections.abc import Callable
from types import FrameType

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- graceful restarts ------------------------------------------------------------------
# systemd's stop (KillMode=control-group) and ``kill -TERM -<pgid>`` send SIGTERM to the
# pool's children too, and a child died of it with its stage half done (WorkerLostError).
# The worker's own warm shutdown already waits for running tasks, so while a child runs
# one it lets SIGTERM pass; idle, it keeps billiard's handler and exits as before. A
# Python handler, not SIG_IGN: hooks and Terraform the task starts get the default back
# at exec. Set per task, because billiard installs its own handler once the child starts.

SignalHandler = Callable[[int, FrameType | None], object] | int | None


class _SigtermHold:
    in_pool_child = False
    idle_handler: SignalHandler = None


@worker_process_init.connect
def note_pool_child(**kwargs: object) -> None:
    _SigtermHold.in_pool_child = True
    # What the child inherited (Django, Celery, the portal's modules: most of its 100 MiB)
    # lives as long as it does: out of the collector's sight, a full collection no longer
    # walks it in the middle of a stage.
    gc.freeze()


@task_prerun.connect
def hold_sigterm(**kwargs: object) -> None:
    if _SigtermHold.in_pool_child:
        _SigtermHold.idle_handler = signal.signal(signal.SIGTERM, _let_pass)


@task_postrun.connect
def release_sigterm(**kwargs: object) -> None:
    if _SigtermHold.in_pool_child:
        signal.signal(signal.SIGTERM, _SigtermHold.idle_handler or signal.SIG_DFL)


def _let_pass(signum: int, frame: FrameType | None) -> None:
    """The worker's warm shutdown lets this task finish, then stops this child."""
