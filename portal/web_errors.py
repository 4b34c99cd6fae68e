"""The one place web pages turn an expected failure into what the user sees.

A ``PortalError`` raised by a service becomes a message on the next page, naming
the field when there is one; the view then redirects (or re-renders its form) as
it would after success. The API has its own place: ``portal.api_errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.contrib import messages
from django.http import HttpRequest

from portal.errors import PortalError

T = TypeVar("T")


def error_text(exc: PortalError) -> str:
    """One line for people: "<field>: <message>" when the failure concerns a field."""
    return f"{exc.field}: {exc.message}" if exc.field else exc.message


def show_error(request: HttpRequest, exc: PortalError) -> None:
    messages.error(request, error_text(exc))


def attempt(
    request: HttpRequest, *, action: Callable[[], T], success: Callable[[T], str]
) -> T | None:
    """Run a service call for a page: its success message, or its failure's; None on failure."""
    try:
        result = action()
    except PortalError as exc:
        show_error(request, exc)
        return None
    messages.success(request, success(result))
    return result
