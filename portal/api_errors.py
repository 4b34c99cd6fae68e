"""The one place the API turns an expected failure into an HTTP response.

Set as REST framework's ``EXCEPTION_HANDLER``. Bodies keep the shapes clients rely on:
- invalid input (``RequestInvalid``, ``ConfigInvalid``): 400, ``{field: [messages]}``;
- a state that does not allow the action (every other ``PortalError``): 409,
  ``{"detail": message}``, plus ``"holder"`` (the active run's id) for a run conflict
  and ``"field"`` when the failure concerns one.
Everything else goes to REST framework's own handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as rest_exception_handler

from accounts_app.services import RequestInvalid
from pipelines.blueprints import ConfigInvalid
from pipelines.services import RunConflict
from portal.errors import PortalError


def error_response(exc: PortalError | ConfigInvalid) -> Response:
    if isinstance(exc, RequestInvalid):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ConfigInvalid):
        problems = [str(problem) for problem in exc.problems]
        return Response({"config": problems}, status=status.HTTP_400_BAD_REQUEST)
    body: dict[str, object] = {"detail": exc.message}
    if exc.field:
        body["field"] = exc.field
    if isinstance(exc, RunConflict) and exc.holder_id:
        body["holder"] = exc.holder_id
    return Response(body, status=status.HTTP_409_CONFLICT)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, PortalError | ConfigInvalid):
        return error_response(exc)
    return rest_exception_handler(exc, context)


class BoundedJSONParser(JSONParser):
    """REST framework's JSON parser, with a body nested too deep for Python's parser
    answered 400 rather than 500 (the config limits then say how deep is allowed)."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error: nested too deeply") from None
