"""The aggregator's HTTP API (DESIGN.md §5) as an aiohttp application a gateway can mount.

``create_app(agg)`` returns an ``aiohttp.web.Application``; mount it with
``gateway.add_subapp("/status-api", create_app(agg))``. The aggregator's lifecycle stays with
whoever opened it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from typing import Any

from aiohttp import web

from participants.problem import problem, problem_middleware
from participants.tasks import cancel_and_wait

from .core import MAX_BATCH, Aggregator, ReadOptions, check_workflow_id
from .errors import InvalidWorkflowId, NoParticipantAnswered, TooManyWatchers, WorkflowNotFound
from .openapi import openapi_document
from .view import View

AGGREGATOR = web.AppKey("aggregator", Aggregator)
TOKEN = web.AppKey("token", str)
_MAX_AGE = re.compile(r"^max-age=(\d{1,9})$")
_MIN_VERSION = re.compile(r"^([a-z][a-z0-9_-]{0,63}):(\d{1,18})$")


class BadRequest(Exception):
    """A query parameter or header this API cannot accept."""


def create_app(agg: Aggregator, *, token: str | None = None) -> web.Application:
    """The §5 HTTP API over ``agg``, which must be open (entered) while the app serves.

    A gateway mounts it with ``add_subapp`` and enters ``agg`` in its own ``cleanup_ctx``
    (see ``examples/gateway.py``); until then ``/readyz`` answers 503.

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
    """``Cache-Control``, ``?timeout_ms=`` and ``?min_version=`` of a request, validated."""
    max_age: float | None = None
    no_cache = False
    for directive in (d.strip().lower() for d in request.headers.get("Cache-Control", "").split(",")):
        if directive in ("no-cache", "no-store"):
            no_cache = True
        elif directive.startswith("max-age"):
            match = _MAX_AGE.match(directive)
            if not match:
                raise BadRequest(f"Cache-Control {directive!r}: max-age must be a whole number of seconds")
            max_age = float(match.group(1))
    timeout_ms = None
    if "timeout_ms" in request.query:
        raw = request.query["timeout_ms"]
        if not raw.isdigit() or not 1 <= int(raw) <= 600_000:
            raise BadRequest(f"timeout_ms {raw[:20]!r}: expected a whole number of milliseconds, 1 to 600000")
        timeout_ms = int(raw)
    min_versions: dict[str, int] = {}
    participants = request.app[AGGREGATOR].definition.participants
    for raw in request.query.getall("min_version", []):
        match = _MIN_VERSION.match(raw)
        if not match or match.group(1) not in participants:
            raise BadRequest(
                f"min_version {raw[:80]!r}: expected PARTICIPANT:VERSION with one of {sorted(participants)}"
            )
        min_versions[match.group(1)] = max(min_versions.get(match.group(1), 0), int(match.group(2)))
    return ReadOptions(max_age_s=max_age, no_cache=no_cache, min_versions=min_versions, timeout_ms=timeout_ms)


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def get_view(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}``: the reconstructed view."""
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    try:
        options = read_options(request)
        view = await agg.view(workflow_id, options)
    except (BadRequest, InvalidWorkflowId) as exc:
        return _counted(agg, problem(400, str(exc)))
    except WorkflowNotFound as exc:
        return _counted(agg, problem(404, str(exc), workflow_id=workflow_id))
    except NoParticipantAnswered as exc:
        return _counted(agg, problem(503, str(exc), workflow_id=workflow_id, errors=exc.errors))
    headers = {"ETag": view.etag, "Cache-Control": "private, no-cache"}
    if _matches(request.headers.get("If-None-Match", ""), view.etag):
        return _counted(agg, web.Response(status=304, headers=headers))
    return _counted(agg, _json(view.to_json(), headers))


async def watch_view(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}/watch``: Server-Sent Events, one ``view`` event per change.

    The first event comes at once (as soon as any participant knows the workflow); an SSE
    comment every ``watch_heartbeat_ms`` keeps proxies open and detects clients that left.
    """
    agg = request.app[AGGREGATOR]
    workflow_id = request.match_info["workflow_id"]
    try:
        check_workflow_id(workflow_id)
        options = read_options(request)
    except (BadRequest, InvalidWorkflowId) as exc:
        return problem(400, str(exc))
    if agg.watchers.count >= agg.settings.max_watchers:
        return problem(503, f"too many watchers (limit {agg.settings.max_watchers}); try again later")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    # Bounded: a slow client makes the pump wait, and Aggregator.watch drops its oldest changes.
    views: asyncio.Queue[View | None] = asyncio.Queue(maxsize=16)

    async def pump() -> None:
        try:
            async for view in agg.watch(workflow_id, options):
                await views.put(view)
        except TooManyWatchers:
            await views.put(None)

    task = asyncio.create_task(pump(), name=f"watch-{workflow_id}")
    heartbeat = agg.settings.watch_heartbeat_ms / 1000
    try:
        while request.transport is not None and not request.transport.is_closing():
            try:
                async with asyncio.timeout(heartbeat):
                    view = await views.get()
            except TimeoutError:
                if task.done():
                    break  # the view stream ended (it only does on an error): end the response
                await response.write(b": keep-alive\n\n")
                continue
            if view is None:
                await response.write(b"event: error\ndata: too many watchers\n\n")
                break
            data = json.dumps(view.to_json())
            await response.write(f"id: {view.etag}\nevent: view\ndata: {data}\n\n".encode())
    except ConnectionResetError:
        pass  # the client went away: clean up below
    finally:
        await cancel_and_wait(task)
    return response


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
    except (BadRequest, InvalidWorkflowId) as exc:
        return problem(400, str(exc))
    body = {"views": [v.to_json() for v in views], "not_found": not_found}
    return _json(body, {"Cache-Control": "private, no-cache"})


def _json(body: dict[str, Any], headers: dict[str, str]) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type="application/json", headers=headers)


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


__all__ = ["AGGREGATOR", "View", "create_app"]
