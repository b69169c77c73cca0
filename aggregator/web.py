"""The aggregator's HTTP API (docs/design.md, "Aggregator HTTP API") as an aiohttp application a gateway can mount.

``create_app(agg)`` returns an ``aiohttp.web.Application``; mount it with
``gateway.add_subapp("/status-api", create_app(agg))``. The aggregator's lifecycle stays with
whoever opened it; until it is open (and after it closed) reads answer 503.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from contract import cancel_and_wait, problem, problem_middleware

from .core import MAX_BATCH, Aggregator
from .errors import (
    BadReadOptions,
    InvalidWorkflowId,
    NoParticipantAnswered,
    NotOpen,
    TooManyWatchers,
    WorkflowNotFound,
)
from .openapi import openapi_document
from .options import ReadOptions
from .schema import VIEW, VIEWS

AGGREGATOR = web.AppKey("aggregator", Aggregator)
TOKEN = web.AppKey("token", str)


def create_app(agg: Aggregator, *, token: str | None = None) -> web.Application:
    """The HTTP API over ``agg``, which must be open (entered) while the app serves.

    A gateway mounts it with ``add_subapp`` and enters ``agg`` in its own ``cleanup_ctx``
    (see ``examples/gateway.py``); until then ``/readyz`` and reads answer 503.

    ``token``, or the definition's ``[auth]``, turns on bearer authentication for everything
    but ``/healthz`` and ``/readyz``.
    """
    app = web.Application(middlewares=[problem_middleware, _auth_middleware])
    app[AGGREGATOR] = agg
    app[TOKEN] = token or agg.definition.auth.bearer() or ""
    app.router.add_get("/workflows/{workflow_id}", get_view)
    app.router.add_get("/workflows/{workflow_id}/watch", watch_view)
    app.router.add_get("/workflows", get_views)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app


@web.middleware
async def _auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    expected = request.app[TOKEN]
    # Decided by the matched handler, not the path: "/workflows/healthz" is a workflow view.
    if not expected or request.match_info.handler in (healthz, readyz):
        response: web.StreamResponse = await handler(request)
        return response
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison; the token itself is never logged or echoed.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        failed = problem(401, "a valid bearer token is required")
        failed.headers["WWW-Authenticate"] = 'Bearer realm="aggregator"'
        return failed
    response = await handler(request)
    return response


def read_options(request: web.Request) -> ReadOptions:
    """``Cache-Control``, ``?timeout_ms=`` and ``?min_version=`` of a request (:class:`BadReadOptions`)."""
    return ReadOptions.from_http(
        cache_control=request.headers.get("Cache-Control", ""),
        timeout_ms=request.query.get("timeout_ms"),
        min_versions=request.query.getall("min_version", []),
        participants=request.app[AGGREGATOR].definition.participants,
    )


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def get_view(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}``: the reconstructed view."""
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    try:
        view = await agg.view(workflow_id, read_options(request))
    except (BadReadOptions, InvalidWorkflowId) as exc:
        return _counted(agg, problem(400, str(exc)))
    except WorkflowNotFound as exc:
        return _counted(agg, problem(404, str(exc), workflow_id=workflow_id))
    except NoParticipantAnswered as exc:
        return _counted(agg, problem(503, str(exc), workflow_id=workflow_id, errors=exc.errors))
    except NotOpen as exc:
        return _counted(agg, problem(503, str(exc)))
    headers = {"ETag": view.etag, "Cache-Control": "private, no-cache"}
    if _matches(request.headers.get("If-None-Match", ""), view.etag):
        return _counted(agg, web.Response(status=304, headers=headers))
    body = VIEW.dump_json(view.to_json())
    return _counted(agg, web.Response(body=body, content_type="application/json", headers=headers))


async def watch_view(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}/watch``: Server-Sent Events (aiohttp-sse), one ``view`` event per change.

    The watcher's slot is taken before the response starts, so past ``max_watchers`` the answer
    is a 503, never a 200 that fails later. The first event comes at once (as soon as any
    participant knows the workflow); an SSE comment every ``watch_heartbeat_ms`` keeps proxies
    open and finds clients that left, which frees their slot.
    """
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    try:
        options = read_options(request)
        async with agg.watching(workflow_id, options) as views:
            async with sse_response(
                request,
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                sep="\n",
                ping_interval=agg.settings.watch_heartbeat_ms / 1000,
            ) as stream:

                async def pump() -> None:
                    async for view in views:
                        data = VIEW.dump_json(view.to_json()).decode()
                        try:
                            await stream.send(data, event="view", id=view.etag)
                        except (ConnectionResetError, TimeoutError):
                            return  # the client left, or stopped reading

                pumping = asyncio.create_task(pump(), name=f"watch-{workflow_id}")
                # The stream ends when the views end (an error) or the client leaves (the ping fails).
                left = asyncio.create_task(stream.wait(), name=f"watch-{workflow_id}-client")
                try:
                    await asyncio.wait({pumping, left}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    await cancel_and_wait(pumping)
                    await cancel_and_wait(left)
            return stream
    except (BadReadOptions, InvalidWorkflowId) as exc:
        return problem(400, str(exc))
    except (TooManyWatchers, NotOpen) as exc:
        return problem(503, str(exc))
    except ConnectionResetError:
        return web.Response()  # the client left while the stream started: nothing to answer


async def get_views(request: web.Request) -> web.StreamResponse:
    """``GET /workflows?id=a&id=b``: several views, one batch call per participant."""
    agg = request.app[AGGREGATOR]
    ids = request.query.getall("id", [])
    if not ids:
        return problem(400, "give at least one id query parameter (/workflows?id=a&id=b)")
    if len(ids) > MAX_BATCH:
        return problem(400, f"at most {MAX_BATCH} ids per request (got {len(ids)})")
    try:
        views, not_found = await agg.views(ids, read_options(request))
    except (BadReadOptions, InvalidWorkflowId) as exc:
        return problem(400, str(exc))
    except NotOpen as exc:
        return problem(503, str(exc))
    body = VIEWS.dump_json({"views": [v.to_json() for v in views], "not_found": not_found})
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "private, no-cache"}
    )


def _counted(agg: Aggregator, response: web.Response) -> web.Response:
    agg.metrics.views.labels(str(response.status)).inc()
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready to serve: 200 (``degraded`` while the event feed is down and ttl stands in), 503 while not open."""
    agg = request.app[AGGREGATOR]
    breakers = {name: up.breaker.state for name, up in agg.upstreams.items()}
    if not agg.ready:
        return problem(503, "aggregator is not open", participants=breakers)
    body: dict[str, Any] = {
        "status": "degraded" if agg.degraded else "ready",
        "freshness": agg.settings.freshness,
        "participants": breakers,
    }
    if agg.feed is not None:
        body["event_feed"] = {"connected": agg.feed.healthy, "outages": agg.feed.outages}
    if agg.degraded:
        body["detail"] = agg.degraded
    return web.json_response(body)


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition."""
    return web.Response(
        body=request.app[AGGREGATOR].metrics.render(), content_type="text/plain", charset="utf-8"
    )


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 description of this API."""
    return web.json_response(openapi_document(request.app[AGGREGATOR].definition))


__all__ = ["AGGREGATOR", "create_app", "read_options"]
