"""Bearer-token authentication, the one check both sides' servers make.

A request passes when it carries exactly one ``Authorization`` header, ``Bearer <token>``
(the scheme in any case), whose token equals the configured one. Two headers are refused
rather than one of them chosen: a proxy and a client that disagree must not let the lenient
reading win. The comparison is constant-time over bytes, and the token is never logged or
echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from .problem import Handler, Problem

#: The detail of every 401.
UNAUTHORIZED_DETAIL = "a valid bearer token is required (Authorization: Bearer <token>)"


def bearer_matches(values: Sequence[str], expected: str) -> bool:
    """Whether the ``Authorization`` header values of a request carry ``expected`` (see the module)."""
    if len(values) != 1:
        return False
    scheme, _, given = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        # Servers keep header bytes that are not UTF-8 as lone surrogates ("surrogateescape").
        offered = given.strip().encode("utf-8", "surrogateescape")
    except UnicodeError:
        return False
    return hmac.compare_digest(offered, expected.encode("utf-8"))


def unauthorized(realm: str) -> Problem:
    """The 401 problem, with its ``WWW-Authenticate`` challenge."""
    return Problem(401, UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})


def bearer_middleware(expected: str, *, realm: str, is_open: Callable[[web.Request], bool]) -> Middleware:
    """An aiohttp middleware that answers 401 to requests without the token, but those ``is_open`` lets by.

    ``is_open`` should decide by the matched handler, never by the path: ``/status/healthz`` is
    a read of a workflow named "healthz", not the health route.
    """

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_open(request) or bearer_matches(request.headers.getall("Authorization", []), expected):
            return await handler(request)
        return unauthorized(realm).response()

    return bearer
