"""The aggregator's HTTP API as an ASGI application (Starlette), for FastAPI and Starlette gateways.

``create_app(agg)`` returns the same routes, status codes, problem details, headers (ETag/304,
Cache-Control, bearer auth), batch and stalled listing, watch stream and status page as the
aiohttp application (:mod:`aggregator.web`): what each route answers is :mod:`aggregator.api`'s,
and errors are answered from the same table. A gateway mounts it and opens the
:class:`~aggregator.Aggregator` in its own lifespan::

    agg = Aggregator(load_definition("workflow.toml"))
    app = FastAPI(lifespan=aggregator.asgi.lifespan(agg))
    aggregator.asgi.mount(app, "/status", aggregator.asgi.create_app(agg))

(:func:`mount` is ``app.mount`` that also routes paths holding a decoded line break.)

Until the aggregator is open (and after it closed) reads answer 503. Needs the ``asgi`` extra
(Starlette); the rest of the library does not.

Watch streams end when the client leaves, when the aggregator's views end, and when the
server stops: call :func:`stop_streams` as it begins to stop (uvicorn waits for open
responses before it runs the lifespan's shutdown; ``examples/fastapi_gateway.py`` shows a
``uvicorn.Server`` that does), or give uvicorn ``--timeout-graceful-shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from multidict import MultiDict, MultiDictProxy
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from contract import Problem, is_valid_workflow_id

from . import api
from ._problems import PROBLEMS
from .api import Answer
from .core import Aggregator
from .errors import InvalidWorkflowId
from .schema import VIEW

log = logging.getLogger(__name__)

#: A stalled client (its socket buffer full) ends its stream after this long.
SEND_TIMEOUT_S = 10.0
_NO_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(agg: Aggregator, *, token: str | None = None, manage: bool = False) -> Starlette:
    """The HTTP API over ``agg`` as an ASGI application.

    ``token``, or the definition's ``[auth]``, turns on bearer authentication for everything
    but ``/healthz``, ``/readyz`` and the status page's files. ``manage=True`` opens and closes
    ``agg`` in this application's own lifespan, for serving it alone (``uvicorn`` on this app);
    a mounted application gets no lifespan of its own: use :func:`lifespan` in the host's.
    """
    expected = api.token_for(agg, token)
    state = _State(agg, expected)

    def guarded(name: str, answer: Callable[[Request], Awaitable[Answer]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            refused = api.authorized(expected, name, request.headers.getlist("authorization"))
            return response(refused if refused is not None else await answer(request))

        endpoint.__name__ = name
        return endpoint

    async def view(request: Request) -> Answer:
        headers = request.headers
        return await api.view(
            agg,
            request.path_params["workflow_id"],
            query_of(request),
            headers.get("cache-control"),
            headers.get("if-none-match"),
        )

    async def views(request: Request) -> Answer:
        return await api.views(agg, query_of(request), request.headers.get("cache-control"))

    async def summary(request: Request) -> Answer:
        return await api.summary(agg, query_of(request))

    async def timeline(request: Request) -> Answer:
        return await api.timeline(agg, request.path_params["workflow_id"])

    async def redrive(request: Request) -> Answer:
        return await api.redrive(agg, request.path_params["workflow_id"])

    async def redrives(request: Request) -> Answer:
        if request.method != "POST":
            return api.redrive_jobs(agg, query_of(request))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > api.MAX_JOB_BODY_BYTES:
                break
        return await api.start_redrives(agg, body, query_of(request))

    async def redrive_job(request: Request) -> Answer:
        if request.method == "DELETE":
            return await api.cancel_redrives(agg, request.path_params["job_id"])
        return api.redrive_job(agg, request.path_params["job_id"])

    async def fixed(answer: Callable[[], Answer]) -> Answer:
        return answer()

    routes = [
        Route("/workflows/{workflow_id}", guarded("view", view), name="view"),
        Route("/workflows/{workflow_id}/watch", _Watch(state), methods=["GET"], name="watch"),
        Route("/workflows/{workflow_id}/timeline", guarded("timeline", timeline), name="timeline"),
        Route("/workflows", guarded("views", views), name="views"),
        Route("/summary", guarded("summary", summary), name="summary"),
        Route(
            "/workflows/{workflow_id}/redrive", guarded("redrive", redrive), methods=["POST"], name="redrive"
        ),
        Route("/redrives", guarded("redrives", redrives), methods=["GET", "POST"], name="redrives"),
        Route(
            "/redrives/{job_id}",
            guarded("redrive_job", redrive_job),
            methods=["GET", "DELETE"],
            name="redrive_job",
        ),
        Route("/healthz", guarded("healthz", lambda r: fixed(lambda: api.healthz(agg))), name="healthz"),
        Route("/readyz", guarded("readyz", lambda r: fixed(lambda: api.readyz(agg))), name="readyz"),
        Route("/metrics", guarded("metrics", lambda r: fixed(lambda: api.metrics(agg))), name="metrics"),
        Route(
            "/openapi.json",
            guarded("openapi", lambda r: fixed(lambda: api.openapi(agg, auth=bool(expected)))),
            name="openapi",
        ),
        # An id with an encoded "/" (a%2Fb), which the server decodes before routing: as aiohttp
        # matches before decoding, it is an invalid id (400), not an unknown path.
        Route(
            "/workflows/{path:path}",
            guarded("view", _slashed),
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            name="slashed",
        ),
        Route("/ui", guarded("ui_slash", lambda r: fixed(api.ui_slash)), name="ui_slash"),
        Route("/ui/", guarded("ui_page", lambda r: fixed(lambda: api.ui_page(None))), name="ui_page"),
        Route(
            "/ui/{name}",
            guarded("ui_file", lambda r: fixed(lambda: api.ui_page(r.path_params["name"]))),
            name="ui_file",
        ),
    ]

    async def http_problem(request: Request, exc: Exception) -> Response:
        """The router's own 404 and 405 (a 401 first, where a token is wanted), as problems."""
        assert isinstance(exc, HTTPException)
        refused = api.authorized(expected, None, request.headers.getlist("authorization"))
        if refused is not None:
            return response(refused)
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() in ("allow", "retry-after")}
        return response(Answer.problem(Problem(exc.status_code, str(exc.detail), headers=headers)))

    async def known_problem(request: Request, exc: Exception) -> Response:
        found = PROBLEMS.problem_for(exc)
        assert found is not None  # registered for the table's own types only
        return response(Answer.problem(found))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error serving %s %s", request.method, request.url.path, exc_info=exc)
        return response(Answer.problem(Problem(500, "internal error; see the server log")))

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        kind: known_problem for kind in PROBLEMS.kinds()
    }
    handlers[HTTPException] = http_problem
    handlers[Exception] = unexpected
    app = Starlette(
        routes=routes,
        exception_handlers=handlers,
        lifespan=lifespan(agg, app_state=state) if manage else None,
    )
    # Starlette answers "/healthz/" with a redirect to "/healthz" (any method, before the token
    # is checked); the contract has no such routes: 404, as aiohttp answers.
    app.router.redirect_slashes = False
    app.state.aggregator = agg
    app.state.streams = state
    return app


#: What follows a workflow id in the routes under it, and the methods each takes.
_UNDER_ID = {"watch": "GET, HEAD", "timeline": "GET, HEAD", "redrive": "POST"}


async def _slashed(request: Request) -> Answer:
    """A path under ``/workflows/`` that no route took with this method: another method on a
    route (405), an id holding an encoded "/" (400: the server decodes it before routing, aiohttp
    after), or no route at all (404)."""
    path: str = request.path_params["path"]
    head, _, tail = path.rpartition("/")
    if b"%2f" in request.scope.get("raw_path", b"").lower():
        if tail not in _UNDER_ID:  # a view's 400, counted as a view's answer is
            request.app.state.aggregator.metrics.views.inc("400")
            raise InvalidWorkflowId(path)
        raise InvalidWorkflowId(head)
    if path and "/" not in path:  # /workflows/{id} is GET only
        raise HTTPException(405, headers={"Allow": "GET, HEAD"})
    if is_valid_workflow_id(head) and tail in _UNDER_ID:
        raise HTTPException(405, headers={"Allow": _UNDER_ID[tail]})
    raise HTTPException(404)


class _State:
    """What the routes of one application share: the aggregator, the token, and the stop signal."""

    def __init__(self, agg: Aggregator, token: str) -> None:
        self.agg = agg
        self.token = token
        self.stopping = asyncio.Event()


def mount(host: Starlette | Router, prefix: str, app: Starlette) -> Mount:
    """Mount ``app`` (from :func:`create_app`) under ``prefix`` of ``host`` (a FastAPI or Starlette
    application, or a router), as ``host.mount(prefix, app)`` does, and return the route.

    Starlette's mount pattern stops at a line break, and the server has decoded ``%0A`` in the
    path before routing: with ``host.mount``, a workflow id holding one never reaches the
    aggregator, and the host answers its own 404 (FastAPI's ``{"detail": "Not Found"}``) where
    the aggregator answers a problem. This mount matches every path under ``prefix``.
    """
    route = Mount(prefix, app=app)
    route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    (host.router if isinstance(host, Starlette) else host).routes.append(route)
    return route


def stop_streams(app: Starlette) -> None:
    """End every watch stream of ``app`` (the server is stopping): each sends its last bytes and closes."""
    state: _State = app.state.streams
    state.stopping.set()


def lifespan(
    agg: Aggregator, *, app_state: _State | None = None
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan for the host application that opens ``agg`` on start-up and closes it on
    shutdown: ``FastAPI(lifespan=lifespan(agg))``. To combine it with a lifespan of the host's
    own, enter ``agg`` there instead: ``async with agg: yield``."""

    @contextlib.asynccontextmanager
    async def run(_: Any) -> AsyncIterator[None]:
        async with agg:
            try:
                yield
            finally:
                if app_state is not None:
                    app_state.stopping.set()

    return run


def query_of(request: Request) -> MultiDictProxy[str]:
    """A Starlette request's query parameters as :mod:`aggregator.api` reads them."""
    if not request.scope.get("query_string"):
        return _NO_QUERY
    return MultiDictProxy(MultiDict(request.query_params.multi_items()))


def response(answer: Answer) -> Response:
    """An :class:`~aggregator.api.Answer` as a Starlette response."""
    return Response(
        content=answer.body,
        status_code=answer.status,
        headers=dict(answer.headers),
        media_type=answer.content_type,
    )


class _Watch:
    """``GET /workflows/{id}/watch``: Server-Sent Events, one ``view`` event per change.

    A raw ASGI endpoint: it starts the stream only once the watcher's slot is taken (past
    ``max_watchers`` the answer is a 503 problem), writes every event from one place (views and
    heartbeat comments never interleave), and ends when the views end, the client disconnects,
    a write stalls for :data:`SEND_TIMEOUT_S`, or :func:`stop_streams` is called.
    """

    def __init__(self, state: _State) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        state = self._state
        agg = state.agg
        refused = api.authorized(state.token, "watch", request.headers.getlist("authorization"))
        if refused is not None:
            await response(refused)(scope, receive, send)
            return
        workflow_id = request.path_params["workflow_id"]
        try:
            options = api.read_options(agg, query_of(request), request.headers.get("cache-control"))
            watching = agg.watching(workflow_id, options)
            views = await watching.__aenter__()
        except Exception as exc:
            found = PROBLEMS.problem_for(exc)
            if found is None:
                raise
            await response(Answer.problem(found))(scope, receive, send)
            return
        try:
            await self._stream(views, send, receive, workflow_id)
        finally:
            await watching.__aexit__(None, None, None)

    async def _stream(
        self, views: AsyncIterator[Any], send: Send, receive: Receive, workflow_id: str
    ) -> None:
        agg = self._state.agg
        headers = [(b"content-type", b"text/event-stream"), (b"connection", b"keep-alive")]
        headers += [(k.lower().encode(), v.encode()) for k, v in api.STREAM_HEADERS.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

        async def pump() -> None:
            try:
                async for view in views:
                    data = VIEW.dump_json(view.to_json())
                    await frames.put(b"id: " + view.etag.encode() + b"\nevent: view\ndata: " + data + b"\n\n")
            except Exception:  # the views ended on an error (logged where it happened): so does the stream
                log.debug("watch of %s ended", workflow_id, exc_info=True)
            await frames.put(None)

        async def write() -> None:
            heartbeat = agg.settings.watch_heartbeat_ms / 1000
            while True:
                try:
                    frame = await asyncio.wait_for(frames.get(), heartbeat)
                except TimeoutError:
                    frame = b": ping\n\n"
                if frame is None:
                    return
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await send({"type": "http.response.body", "body": frame, "more_body": True})

        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        # The stream ends when the writer does (the views ended, or a write failed or stalled),
        # the client leaves, or the server stops; the views are read on the side.
        pumping = asyncio.create_task(pump(), name=f"watch-{workflow_id}")
        ends = {
            asyncio.create_task(write(), name=f"watch-{workflow_id}-write"),
            asyncio.create_task(client_gone(), name=f"watch-{workflow_id}-client"),
            asyncio.create_task(self._state.stopping.wait(), name=f"watch-{workflow_id}-stop"),
        }
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, *ends):
                task.cancel()
            await asyncio.gather(pumping, *ends, return_exceptions=True)
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


__all__ = ["create_app", "lifespan", "query_of", "response", "stop_streams"]
