"""The aggregator's HTTP API (docs/design.md, "Aggregator HTTP API") as an aiohttp application a gateway can mount.

``create_app(agg)`` returns an ``aiohttp.web.Application``; mount it with
``gateway.add_subapp("/status-api", create_app(agg))``. The aggregator's lifecycle stays with
whoever opened it; until it is open (and after it closed) reads answer 503. What each route
answers is :mod:`aggregator.api`'s, shared with the ASGI application (:mod:`aggregator.asgi`):
here requests are only translated in and answers out.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_sse import sse_response

from contract import cancel_and_wait, problem_middleware_for, tracing
from contract.problem import Handler

from . import api
from ._problems import PROBLEMS
from .api import Answer
from .core import Aggregator
from .options import ReadOptions
from .schema import VIEW

AGGREGATOR = web.AppKey("aggregator", Aggregator)
TOKEN = web.AppKey("token", str)
STOPPING = web.AppKey("stopping", asyncio.Event)
#: How often a watch stream checks that its client is still connected (where the server does not
#: cancel handlers of clients that hung up, as a gateway's may not).
_CLIENT_CHECK_S = 1.0


def create_app(agg: Aggregator, *, token: str | None = None) -> web.Application:
    """The HTTP API over ``agg``, which must be open (entered) while the app serves.

    A gateway mounts it with ``add_subapp`` and enters ``agg`` in its own ``cleanup_ctx``
    (see ``examples/gateway.py``); until then ``/readyz`` and reads answer 503.

    ``token``, or the definition's ``[auth]``, turns on bearer authentication for everything
    but ``/healthz``, ``/readyz`` and the status page's files.
    """
    expected = api.token_for(agg, token)
    # No token: no middleware on every request. Open routes are told by the matched route's
    # name, not the path: "/workflows/healthz" is a workflow view.
    auth = [_bearer(expected)] if expected else []
    # The problem middleware is outermost: 401s, the router's 404/405 and every error a route
    # raises are answered from the one table.
    app = web.Application(
        middlewares=[*tracing.server_middlewares(), problem_middleware_for(PROBLEMS), *auth]
    )
    app[AGGREGATOR] = agg
    app[TOKEN] = expected
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stop_streams)
    add = app.router.add_get
    add("/workflows/{workflow_id}", get_view, name="view")
    add("/workflows/{workflow_id}/watch", watch_view, name="watch")
    add("/workflows/{workflow_id}/timeline", get_timeline, name="timeline")
    add("/workflows", get_views, name="views")
    add("/summary", get_summary, name="summary")
    app.router.add_post("/workflows/{workflow_id}/redrive", post_redrive, name="redrive")
    app.router.add_post("/redrives", post_redrives, name="redrives_start")
    add("/redrives", get_redrives, name="redrives")
    add("/redrives/{job_id}", get_redrive_job, name="redrive_job")
    app.router.add_delete("/redrives/{job_id}", delete_redrive_job, name="redrive_cancel")
    add("/healthz", healthz, name="healthz")
    add("/readyz", readyz, name="readyz")
    add("/metrics", metrics, name="metrics")
    add("/openapi.json", openapi, name="openapi")
    add("/ui", ui_slash, name="ui_slash")
    add("/ui/", ui_page, name="ui_page")
    add("/ui/{name}", ui_page, name="ui_file")
    return app


def _bearer(expected: str) -> Middleware:
    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        refused = api.authorized(expected, route, request.headers.getall("Authorization", []))
        return await handler(request) if refused is None else response(refused)

    return bearer


def response(answer: Answer) -> web.Response:
    """An :class:`~aggregator.api.Answer` as an aiohttp response."""
    return web.Response(status=answer.status, body=answer.body or None, headers=_headers(answer))


def _headers(answer: Answer) -> dict[str, str]:
    if answer.content_type is None:
        return dict(answer.headers)
    return {**answer.headers, "Content-Type": answer.content_type}


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive, with the participants' measured clock offsets."""
    return response(api.healthz(request.app[AGGREGATOR]))


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready to serve (503 while the aggregator is not open)."""
    return response(api.readyz(request.app[AGGREGATOR]))


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition."""
    return response(api.metrics(request.app[AGGREGATOR]))


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 description of this API."""
    return response(api.openapi(request.app[AGGREGATOR], auth=bool(request.app[TOKEN])))


async def ui_page(request: web.Request) -> web.StreamResponse:
    """The status page and its files."""
    return response(api.ui_page(request.match_info.get("name")))


async def ui_slash(request: web.Request) -> web.StreamResponse:
    """``/ui`` to ``ui/``."""
    return response(api.ui_slash())


async def _stop_streams(app: web.Application) -> None:
    """On shutdown, end every watch stream, so the server stops within its grace period."""
    app[STOPPING].set()


async def _client_gone(request: web.Request) -> None:
    """Return once the client's connection is closed."""
    # aiohttp offers no event for "the connection closed" without handler cancellation.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(_CLIENT_CHECK_S)


async def get_view(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}``: the reconstructed view."""
    headers = request.headers
    answer = await api.view(
        request.app[AGGREGATOR],
        request.match_info["workflow_id"],
        request.query,
        headers.get("Cache-Control"),
        headers.get("If-None-Match"),
    )
    return response(answer)


async def get_views(request: web.Request) -> web.StreamResponse:
    """``GET /workflows?id=a&id=b`` (or ``?stalled=true``, or ``?state=S``): several views."""
    return response(
        await api.views(request.app[AGGREGATOR], request.query, request.headers.get("Cache-Control"))
    )


async def get_summary(request: web.Request) -> web.StreamResponse:
    """``GET /summary``: in-flight workflows counted by derived state."""
    return response(await api.summary(request.app[AGGREGATOR], request.query))


async def get_timeline(request: web.Request) -> web.StreamResponse:
    """``GET /workflows/{id}/timeline``: every participant's history, merged in time order."""
    return response(await api.timeline(request.app[AGGREGATOR], request.match_info["workflow_id"]))


async def post_redrive(request: web.Request) -> web.StreamResponse:
    """``POST /workflows/{id}/redrive``: every participant republishes the workflow's events."""
    return response(await api.redrive(request.app[AGGREGATOR], request.match_info["workflow_id"]))


async def post_redrives(request: web.Request) -> web.StreamResponse:
    """``POST /redrives``: start a redrive job."""
    # read(n) gives what is buffered: gather the pieces until the end or one byte past the limit.
    chunks: list[bytes] = []
    size = 0
    while size <= api.MAX_JOB_BODY_BYTES:
        chunk = await request.content.read(api.MAX_JOB_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return response(await api.start_redrives(request.app[AGGREGATOR], b"".join(chunks), request.query))


async def get_redrives(request: web.Request) -> web.StreamResponse:
    """``GET /redrives``: the redrive jobs kept, newest first."""
    return response(api.redrive_jobs(request.app[AGGREGATOR], request.query))


async def get_redrive_job(request: web.Request) -> web.StreamResponse:
    """``GET /redrives/{id}``: one redrive job's progress and results."""
    return response(api.redrive_job(request.app[AGGREGATOR], request.match_info["job_id"]))


async def delete_redrive_job(request: web.Request) -> web.StreamResponse:
    """``DELETE /redrives/{id}``: cancel a redrive job."""
    return response(await api.cancel_redrives(request.app[AGGREGATOR], request.match_info["job_id"]))


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
    options = api.read_options(agg, request.query, request.headers.get("Cache-Control"))
    try:
        async with agg.watching(workflow_id, options) as views:
            async with sse_response(
                request,
                headers=api.STREAM_HEADERS,
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


def read_options(request: web.Request) -> ReadOptions:
    """``Cache-Control``, ``?timeout_ms=`` and ``?min_version=`` of an aiohttp request."""
    return api.read_options(request.app[AGGREGATOR], request.query, request.headers.get("Cache-Control"))


__all__ = ["AGGREGATOR", "create_app", "read_options", "response"]
