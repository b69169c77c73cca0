"""RFC 9457 problem details (`application/problem+json`) for aiohttp: every error either side answers."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str, *, title: str | None = None, **extensions: Any) -> web.Response:
    """A problem+json response; ``extensions`` become extra members (e.g. ``errors``)."""
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_JSON,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's own errors (404, 405, 413, …) and unexpected exceptions into problem+json."""
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
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return problem(500, "internal error; see the server log")
