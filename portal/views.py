"""Project-level views: the health check and the Prometheus metrics for operators, and the
error pages (404, 403, 500) in the portal's layout."""

from __future__ import annotations

import hmac
import logging
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from kombu import Connection
from kombu.exceptions import KombuError

from accounts_app import permissions
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


# --- error pages ----------------------------------------------------------------------

# status -> (title, what it means for the user)
ERROR_PAGES = {
    403: ("Not allowed", "Your role does not let you see or do this."),
    404: ("Page not found", "There is no page at this address, or it is not yours to see."),
    500: (
        "Something went wrong",
        "The portal could not answer this request. It has been logged; try again in a moment.",
    ),
}


# The same words as the API's own errors (Django REST framework's).
API_DETAILS = {
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    500: "A server error occurred.",
}


def _error_page(request: HttpRequest, *, status: int, detail: str = "") -> HttpResponse:
    """The portal's layout with its navigation and ways back; JSON under /api/."""
    title, explanation = ERROR_PAGES[status]
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": API_DETAILS[status]}, status=status)
    context = {"status": status, "title": title, "explanation": explanation, "detail": detail}
    if status != 500:  # a server error may come from the database: ask it nothing more
        context.update(permissions.roles_for_templates(request.user))
    return render(request, "errors/error.html", context, status=status)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _error_page(request, status=404)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    # The views' PermissionDenied messages are written for people ("only approvers ...").
    return _error_page(request, status=403, detail=str(exception) if exception.args else "")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _error_page(
        request,
        status=403,
        detail="The form was out of date or came from elsewhere: reload the page and try again.",
    )


def server_error(request: HttpRequest) -> HttpResponse:
    try:
        return _error_page(request, status=500)
    except Exception:
        logger.exception("the 500 page could not be rendered")
        return HttpResponse(
            "<!doctype html><title>Server error</title><h1>Something went wrong</h1>"
            '<p><a href="/">Back to the portal</a></p>',
            status=500,
        )
