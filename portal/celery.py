"""The Celery app. Tasks stay thin: they call services in the apps."""

import os
import signal
from collections.abc import Callable
from types import FrameType

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_process_init
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
