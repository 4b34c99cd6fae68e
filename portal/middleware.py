"""Response headers every page gets: a Content-Security-Policy, and no caching of
anything a logged-in user or an API caller sees (it may show their accounts and runs)."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

API_PREFIX = "/api/"


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.docs_path = reverse("api-docs")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            docs = request.path == self.docs_path
            response["Content-Security-Policy"] = (
                settings.PORTAL_CSP_API_DOCS if docs else settings.PORTAL_CSP
            )
        user = getattr(request, "user", None)
        if request.path.startswith(API_PREFIX) or (user is not None and user.is_authenticated):
            add_never_cache_headers(response)
        return response
