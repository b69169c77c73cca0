"""The aggregator's HTTP API (docs/design.md, "Aggregator HTTP API") as an aiohttp application a gateway can mount.

``create_app(agg)`` returns an ``aiohttp.web.Application``; mount it with
``gateway.add_subapp("/status-api", create_app(agg))``. The aggregator's lifecycle stays with
whoever opened it; until it is open (and after it closed) reads answer 503.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from contract import Problem, bearer_middleware, cancel_and_wait, problem_middleware_for, tracing

from ._problems import PROBLEMS, status_for
from ._ui import add_ui
from .core import Aggregator
from .errors import AggregatorError, BadRequest
from .openapi import openapi_document
from .options import MAX_BATCH, ReadOptions
from .schema import TIMELINE, VIEW, VIEWS

AGGREGATOR = web.AppKey("aggregator", Aggregator)
TOKEN = web.AppKey("token", str)
STOPPING = web.AppKey("stopping", asyncio.Event)
#: Handlers that need no token: health, readiness and the status page's files (its API calls do).
OPEN = web.AppKey("open", tuple)
#: How often a watch stream checks that its client is still connected (where the server does not
#: cancel handlers of clients that hung up, as a gateway's may not).
_CLIENT_CHECK_S = 1.0


def create_app(agg: Aggregator, *, token: str | None = None) -> web.Application:
    """The HTTP API over ``agg``, which must be open (entered) while the app serves.

    A gateway mounts it with ``add_subapp`` and enters ``agg`` in its own ``cleanup_ctx``
    (see ``examples/gateway.py``); until then ``/readyz`` and reads answer 503.

    ``token``, or the definition's ``[auth]``, turns on bearer authentication for everything
    but ``/healthz`` and ``/readyz``.
    """
    expected = token or agg.definition.auth.bearer() or ""
    # No token: no middleware on every request. Open routes are told by the matched handler,
    # not the path: "/workflows/healthz" is a workflow view.
    auth = (
        [
            bearer_middleware(
                expected, realm="aggregator", is_open=lambda r: r.match_info.handler in r.app[OPEN]
            )
        ]
        if expected
        else []
    )
    # The problem middleware is outermost: 401s, the router's 404/405 and every error a route
    # raises are answered from the one table.
    app = web.Application(
        middlewares=[*tracing.server_middlewares(), problem_middleware_for(PROBLEMS), *auth]
    )
    app[AGGREGATOR] = agg
    app[TOKEN] = expected
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/workflows/{workflow_id}", get_view)
    app.router.add_get("/workflows/{workflow_id}/watch", watch_view)
    app.router.add_get("/workflows/{workflow_id}/timeline", get_timeline)
    app.router.add_get("/workflows", get_views)
    app.router.add_post("/workflows/{workflow_id}/redrive", post_redrive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app[OPEN] = (healthz, readyz, *add_ui(app))
    return app


async def _stop_streams(app: web.Application) -> None:
    """On shutdown, end every watch stream, so the server stops within its grace period."""
    app[STOPPING].set()


async def _client_gone(request: web.Request) -> None:
    """Return once the client's connection is closed."""
    # aiohttp offers no event for "the connection closed" without handler cancellation.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(_CLIENT_CHECK_S)


_DEFAULT_OPTIONS = ReadOptions()


def read_options(request: web.Request) -> ReadOptions:
    """``Cache-Control``, ``?timeout_ms=`` and ``?min_version=`` of a request (:class:`BadReadOptions`)."""
    if not request.query_string and "Cache-Control" not in request.headers:
        return _DEFAULT_OPTIONS  # the common read: nothing to parse
    return ReadOptions.from_http(
        cache_control=request.headers.get("Cache-Control", ""),
        timeout_ms=request.query.get("timeout_ms"),
        min_versions=request.query.getall("min_version", []),
        participants=request.app[AGGREGATOR].definition.versioned(),
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
    except AggregatorError as exc:  # answered from the table; counted here, by its status
        agg.metrics.views.inc(str(status_for(exc)))
        raise
    etag = view.etag
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _matches(if_none_match, etag):
        return _counted(agg, web.Response(status=304, headers=headers))
    body = VIEW.dump_json(view.to_json())
    return _counted(agg, web.Response(body=body, content_type="application/json", headers=headers))


async def watch_view(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}/watch``: Server-Sent Events (aiohttp-sse), one ``view`` event per change.

    The watcher's slot is taken before the response starts, so past ``max_watchers`` the answer
    is a 503, never a 200 that fails later. The first event comes at once (as soon as any
    participant knows the workflow); an SSE comment every ``watch_heartbeat_ms`` keeps proxies
    open. A client that hangs up frees its slot at once (within a second where the server does
    not cancel its handler); a stopping server ends every stream.
    """
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    try:
        async with agg.watching(workflow_id, read_options(request)) as views:
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

                # The stream ends when the views end (an error), the client leaves (the connection
                # closes, or a ping fails) or the server stops.
                tasks = {
                    asyncio.create_task(pump(), name=f"watch-{workflow_id}"),
                    asyncio.create_task(stream.wait(), name=f"watch-{workflow_id}-ping"),
                    asyncio.create_task(_client_gone(request), name=f"watch-{workflow_id}-client"),
                    asyncio.create_task(request.app[STOPPING].wait(), name=f"watch-{workflow_id}-stop"),
                }
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        await cancel_and_wait(task)
            return stream
    except ConnectionResetError:
        return web.Response()  # the client left while the stream started: nothing to answer


#: The query parameters of ``GET /workflows``: a batch of ids with read options, or the stalled list
#: (``id`` there too, so that giving both gets its own clear error).
_BATCH_PARAMS = frozenset({"id", "timeout_ms", "min_version"})
_STALLED_PARAMS = frozenset({"stalled", "limit", "id"})


async def get_views(request: web.Request) -> web.StreamResponse:
    """``GET /workflows?id=a&id=b``: several views, one batch call per participant."""
    agg = request.app[AGGREGATOR]
    ids = request.query.getall("id", [])
    known = _STALLED_PARAMS if "stalled" in request.query else _BATCH_PARAMS
    unknown = sorted(set(request.query) - known)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise BadRequest(f"unknown query parameter {shown} (expected {', '.join(sorted(known))})")
    if "stalled" in request.query:
        return await _stalled(request, agg, ids)
    if not ids:
        raise BadRequest("give at least one id query parameter (/workflows?id=a&id=b), or stalled=true")
    if len(ids) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} ids per request (got {len(ids)})")
    views, not_found = await agg.views(ids, read_options(request))
    body = VIEWS.dump_json({"views": [v.to_json() for v in views], "not_found": not_found})
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "private, no-cache"}
    )


async def _stalled(request: web.Request, agg: Aggregator, ids: list[str]) -> web.StreamResponse:
    """``GET /workflows?stalled=true[&limit=N]``: stalled workflows, found through the initiator."""
    if ids or request.query.getall("stalled") != ["true"]:
        raise BadRequest("use stalled=true alone (not with id), once")
    raw_limit = request.query.get("limit", "100")
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise BadRequest(f"limit {raw_limit[:20]!r}: expected a whole number from 1 to 1000")
    views = await agg.stalled(int(raw_limit))
    body = VIEWS.dump_json({"views": [v.to_json() for v in views], "not_found": []})
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


async def get_timeline(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}/timeline``: every participant's history, merged in time order."""
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    body = await agg.timeline(workflow_id)
    return web.Response(body=TIMELINE.dump_json(body), content_type="application/json")


async def post_redrive(request: web.Request) -> web.StreamResponse:
    """``POST /workflows/{id}/redrive``: every participant republishes the workflow's events."""
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    report = await agg.redrive(workflow_id)
    return web.json_response({"workflow_id": workflow_id, "participants": report}, status=202)


def _counted(agg: Aggregator, response: web.Response) -> web.Response:
    agg.metrics.views.inc(str(response.status))
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive (with the process id: under ``serve --workers N`` it tells the workers apart)."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


#: How ``/readyz`` shows each participant's circuit breaker, in words a person reads right.
_SHOWN = {"closed": "ok", "open": "failing", "half_open": "probing"}


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready to serve: 200 (``degraded`` while the event feed is down or participants fail), 503 while not open."""
    agg = request.app[AGGREGATOR]
    health = agg.health()
    if not health.ready:  # said for the load balancer, not for the embedding program
        return Problem(503, "aggregator is not open").response()
    participants = {name: _SHOWN[state] for name, state in health.breakers.items()}
    failing = health.failing
    problems = [health.degraded] if health.degraded else []
    if failing and len(failing) == len(participants):
        problems.append("every participant is failing")
    elif failing:
        problems.append(f"failing: {', '.join(failing)}")
    body: dict[str, Any] = {
        "status": "degraded" if problems else "ready",
        "freshness": agg.settings.freshness,
        "participants": participants,
    }
    if agg.feed is not None:
        body["event_feed"] = {"connected": agg.feed.healthy, "outages": agg.feed.outages}
    if problems:
        body["detail"] = "; ".join(problems)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition."""
    return web.Response(
        body=request.app[AGGREGATOR].metrics.render(), content_type="text/plain", charset="utf-8"
    )


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 description of this API."""
    return web.json_response(
        openapi_document(request.app[AGGREGATOR].definition, auth=bool(request.app[TOKEN]))
    )


__all__ = ["AGGREGATOR", "create_app", "read_options"]
