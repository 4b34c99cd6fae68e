"""Project-level views for operators: the health check and the Prometheus metrics."""

from __future__ import annotations

import hmac
import logging
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from kombu import Connection
from kombu.exceptions import KombuError

from portal import heartbeats, metrics
from portal.models import Component

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 2
OK = "ok"
UNAVAILABLE = "unavailable"


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        logger.warning("health check: database unavailable: %s", error)
        return False
    return True


def _broker_ok() -> bool:
    broker = Connection(settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS)
    try:
        with broker:
            broker.ensure_connection(
                max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS
            )
    except (KombuError, OSError) as error:
        # The error names the host, never the URL's password.
        logger.warning("health check: broker unavailable: %s", type(error).__name__)
        return False
    return True


def _beat(at: datetime | None) -> dict[str, str | float | None]:
    if at is None:
        return {"last_heartbeat": None, "age_seconds": None}
    age = (timezone.now() - at).total_seconds()
    return {"last_heartbeat": at.isoformat(), "age_seconds": round(age, 1)}


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, else 503; no authentication, no secrets.

    The workers' and beat's last heartbeats are reported, not judged: a load balancer
    should not take the web servers out because a worker is down.
    """
    database = _database_ok()
    broker = _broker_ok()
    beats = heartbeats.last_heartbeats() if database else {}
    healthy = database and broker
    body = {
        "status": OK if healthy else UNAVAILABLE,
        "database": OK if database else UNAVAILABLE,
        "broker": OK if broker else UNAVAILABLE,
        **{component.value: _beat(beats.get(component)) for component in Component},
    }
    return JsonResponse(body, status=200 if healthy else 503)


def _may_read_metrics(request: HttpRequest) -> bool:
    token = settings.PORTAL_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    return bool(request.user.is_authenticated and request.user.is_staff)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for staff users or a scraper with PORTAL_METRICS_TOKEN."""
    if not _may_read_metrics(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)
