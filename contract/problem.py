"""RFC 9457 problem details (``application/problem+json``): every error either side answers.

One place renders them. A server keeps one :class:`ErrorTable` from its own exception types to
:class:`Problem` values, and :func:`problem_middleware_for` that table turns whatever a handler
raises into the answer the table gives (aiohttp's own ``HTTPException``\\ s too), so routes raise instead of
each carrying a ladder of ``try``/``except`` (the table is what httpx's transport-error mapping
and Starlette's ``exception_handlers`` are to those projects). :class:`Problem` itself knows
no web framework, so a second server (ASGI) renders the same table the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

#: The JSON Schema of a problem body, as both sides' OpenAPI documents describe it.
PROBLEM_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; extension members (errors, workflow_id, ...) may follow.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem answer: status, detail, extension members and extra headers."""

    status: int
    detail: str
    title: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        """The problem+json body."""
        return json.dumps(
            {
                "type": "about:blank",
                "title": self.title or HTTPStatus(self.status).phrase,
                "status": self.status,
                "detail": self.detail,
                **self.extensions,
            }
        ).encode()

    def response(self) -> web.Response:
        """The problem as an aiohttp response."""
        response = web.Response(status=self.status, body=self.body(), content_type=PROBLEM_JSON)
        response.headers.update(self.headers)
        return response


def problem(status: int, detail: str, *, title: str | None = None, **extensions: Any) -> web.Response:
    """A problem+json response; ``extensions`` become extra members (e.g. ``errors``)."""
    return Problem(status, detail, title, extensions).response()


_E = TypeVar("_E", bound=BaseException)


class ErrorTable:
    """Exception types to the problems that answer them; the nearest registered base class wins.

    ``table.add(NotFound, lambda exc: Problem(404, str(exc)))``, then :meth:`problem_for`.
    """

    def __init__(self) -> None:
        self._rules: dict[type[BaseException], Callable[[Any], Problem]] = {}

    def add(self, kind: type[_E], rule: Callable[[_E], Problem]) -> None:
        """Answer ``kind`` (and its subclasses without a rule of their own) with ``rule(exc)``."""
        self._rules[kind] = rule

    def kinds(self) -> tuple[type[BaseException], ...]:
        """The exception types the table has a rule for (a server registers a handler for each)."""
        return tuple(self._rules)

    def problem_for(self, exc: BaseException) -> Problem | None:
        """The problem that answers ``exc``, or None when the table does not know it."""
        for kind in type(exc).__mro__:
            rule = self._rules.get(kind)
            if rule is not None:
                return rule(exc)
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: A table that knows nothing: aiohttp's own errors and unexpected exceptions only.
_NO_RULES = ErrorTable()


def problem_middleware_for(table: ErrorTable) -> Middleware:
    """A middleware answering with problem+json: what ``table`` knows, aiohttp's own errors
    (404, 405, 413, …), and any other exception as a logged 500 that shows nothing of it."""

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            response = problem(exc.status, detail or exc.reason)
            for name in ("Allow", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except Exception as exc:
            known = table.problem_for(exc)
            if known is not None:
                return known.response()
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return problem(500, "internal error; see the server log")

    return problems


problem_middleware = problem_middleware_for(_NO_RULES)
"""The middleware of a server whose routes raise nothing of their own."""
