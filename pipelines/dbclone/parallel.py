"""One job per database, run in threads, each with its own ``[service]`` log prefix.

When a job fails or the run is cancelled the others are asked to stop at their
next log line (every job is idempotent: a retry picks up what they left).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections

from pipelines.clients.postgres import PostgresError
from pipelines.stages.base import StageCancelled, StageContext, StageError
from portal.errors import PortalError

LogFn = Callable[[str], None]
# A job gets its service's logger and returns that service's outputs (JSON).
Job = Callable[[LogFn], dict[str, Any]]


@dataclass(frozen=True)
class ServiceJob:
    service: str
    job: Job


class _Stopped(Exception):
    """Raised from a worker's log call once the stage decided to stop."""


@dataclass(frozen=True)
class _Failure:
    service: str
    explanation: str
    retryable: bool
    stopped: bool = False  # asked to stop because another job failed


def parallelism(count: int) -> int:
    """Jobs run at once: ``PORTAL_DB_CLONE_PARALLELISM``, at least 1, at most ``count``."""
    return max(1, min(int(settings.PORTAL_DB_CLONE_PARALLELISM), count))


def run_per_service(
    *, ctx: StageContext, jobs: list[ServiceJob], what: str
) -> dict[str, dict[str, Any]]:
    """Run every job in threads (up to the parallelism limit); outputs by service.

    Each thread closes its Django database connections when it ends. Raises
    StageCancelled when the run is cancelled, StageError naming every failure.
    """
    stop = threading.Event()

    def work(item: ServiceJob) -> dict[str, Any]:
        def log(text: str) -> None:
            if stop.is_set():
                raise _Stopped()
            ctx.log(f"[{item.service}] {text}")

        try:
            return item.job(log)
        finally:
            connections.close_all()  # this thread's connections only

    limit = parallelism(len(jobs))
    ctx.log(f"{what}: {len(jobs)} database(s), {limit} at a time")
    results: dict[str, dict[str, Any]] = {}
    failures: list[_Failure] = []
    cancelled = False
    with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="db") as pool:
        futures: dict[Future[dict[str, Any]], str] = {
            pool.submit(work, item): item.service for item in jobs
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            if not cancelled and ctx.is_cancelled():
                cancelled = True
                stop.set()
                ctx.log(f"{what}: cancel requested, stopping")
            for future in done:
                service = futures[future]
                try:
                    results[service] = future.result()
                except _Stopped:
                    failures.append(_Failure(service, "stopped", True, stopped=True))
                except Exception as exc:  # noqa: BLE001 - every failure is reported per service
                    failures.append(_failure(ctx=ctx, service=service, exc=exc))
                    stop.set()
    if cancelled:
        raise StageCancelled()
    real = [f for f in failures if not f.stopped]
    if real:
        explanation = "; ".join(f"{f.service}: {f.explanation}" for f in real)
        stopped = [f.service for f in failures if f.stopped]
        if stopped:
            explanation += f" (stopped: {', '.join(stopped)})"
        raise StageError(explanation, retryable=all(f.retryable for f in real))
    return results


def _failure(*, ctx: StageContext, service: str, exc: Exception) -> _Failure:
    if isinstance(exc, StageError):
        return _Failure(service, exc.explanation, exc.retryable)
    if isinstance(exc, PostgresError):  # a database that may answer next time
        return _Failure(service, str(exc), True)
    if isinstance(exc, PortalError):  # AwsError, CloneError, ...
        return _Failure(service, exc.message, exc.retryable)
    # A bug: the traceback goes to the (redacting) log, the explanation stays short.
    ctx.log(f"[{service}] " + traceback.format_exc())
    return _Failure(service, f"internal error: {type(exc).__name__}", False)
