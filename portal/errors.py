"""The one base of expected failures, shared by every layer.

An expected failure carries a message for people, the field it concerns when there
is one (a form field, an API body key, a config path), and whether trying the same
thing again can help. The API turns it into a 4xx response in one place
(``portal.api_errors``), the web pages in another; nothing else maps errors by hand.
This module imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations


class PortalError(Exception):
    """An expected failure: ``message`` is one line for people and never holds a secret."""

    def __init__(self, message: str, *, field: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retryable = retryable
