"""Redaction of secrets from anything stored or shown: log lines, explanations."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4
# user:password@ in any URL-looking text, whatever the password.
URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+):(?P<pw>[^@\s]+)@")


class Redactor:
    """Replaces every known secret value, and any password in a URL, with [redacted]."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret or len(secret) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret not in self._secrets:
                self._secrets.append(secret)
                # Longest first, so a secret containing another is replaced whole.
                self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = list(self._secrets)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return URL_PASSWORD.sub(rf"\g<scheme>:{REDACTED}@", text)


def _url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def environment_secrets() -> list[str]:
    """Secrets the portal itself holds: database and broker passwords, cloud keys."""
    values = [
        str(settings.DATABASES["default"].get("PASSWORD") or ""),
        _url_password(settings.CELERY_BROKER_URL),
        settings.SECRET_KEY,
        os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        os.environ.get("AWS_SESSION_TOKEN", ""),
    ]
    values += [
        _url_password(value)
        for name, value in os.environ.items()
        if name.startswith("PORTAL_CONNECTION_")
    ]
    return [v for v in values if v]
