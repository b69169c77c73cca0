"""Serving an aiohttp application on a host and port, as one async context manager.

Every server of the project (participants, the aggregator, the demo, tests, benchmarks) starts
the same way: ``async with serve_app(app, host, port) as url``. Port 0 picks a free port; the
yielded URL names the one bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

#: Longest request line the project's servers accept (aiohttp's default is 8,190): a batch read
#: of the most ids a route documents fits, 1,000 ids of 128 characters on a participant, about
#: 141 KB as ``workflow_id=…&`` pairs, with room for clients that percent-encode the ``:``\ s.
MAX_REQUEST_LINE = 256 * 1024
#: Seconds a stopping server gives the requests in progress before it cancels them.
SHUTDOWN_GRACE_S = 5.0
#: Seconds a new connection has to send its first complete request head (request line and
#: headers); past them it is closed without an answer. A client that connects and sends nothing,
#: or a little at a time (slowloris), holds a connection and its buffers no longer than this.
HEAD_TIMEOUT_S = 30.0
#: Seconds an idle keep-alive connection stays open after its last response (aiohttp's
#: ``keepalive_timeout``, whose default is an hour). The next request's head must be complete
#: within them too: aiohttp closes a connection still waiting for a whole head at that deadline.
KEEPALIVE_TIMEOUT_S = 75.0


#: After a refused request, how soon the collector runs, and how often at most.
COLLECT_AFTER_S = 0.2
COLLECT_EVERY_S = 1.0


class _RefusedRequests(logging.Filter):
    """Requests aiohttp's parser refuses (bad bytes, lines too long, undecodable bodies) are the
    client's mistake: one WARNING line each, not an ERROR with a traceback anyone could flood.

    And a collection soon after: a refused connection leaves its read buffers (up to the line
    limit, and what the event loop read past it) in reference cycles of the transport and the
    protocol that only the cyclic collector frees, and with the threshold :func:`run` sets it
    would run too seldom; a client sending oversized requests could otherwise ratchet the
    process up by megabytes per request. At most one collection per :data:`COLLECT_EVERY_S`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0
        self._due: asyncio.TimerHandle | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            detail = " ".join(str(error.message or error).split())[:200]
            record.msg, record.args = "refused a malformed request: %s", (detail,)
            record.exc_info = record.exc_text = None
            self._collect_soon()
        return True

    def _collect_soon(self) -> None:
        if self._due is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # logged outside a loop: nothing to schedule on
            return
        delay = max(COLLECT_AFTER_S, self._next - loop.time())
        self._due = loop.call_later(delay, self._collect)

    def _collect(self) -> None:
        self._due = None
        gc.collect()
        if _malloc_trim is not None:  # and give the freed buffers back to the system (glibc keeps them)
            _malloc_trim(0)
        self._next = asyncio.get_running_loop().time() + COLLECT_EVERY_S


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, where there is one (Linux with glibc); None elsewhere."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _libc_malloc_trim()


#: The logger our servers' HTTP protocol reports to (``aiohttp.server``'s messages, filtered).
SERVER_LOG = logging.getLogger("contract.http")
SERVER_LOG.addFilter(_RefusedRequests())


class _HeadTimedHandler(web.RequestHandler):
    """aiohttp's HTTP/1 protocol, closing a connection whose first request head is not complete
    within ``head_timeout`` seconds of its start.

    aiohttp bounds a connection waiting for a request only by ``keepalive_timeout`` (and older
    releases the project allows not at all before a first request): a timer is armed when the
    connection is made and cancelled once the parser has produced a complete head. Later heads on a kept-alive
    connection are bounded by ``keepalive_timeout`` (see :data:`KEEPALIVE_TIMEOUT_S`).
    """

    __slots__ = ("_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._head_timeout > 0:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # The parser counts the heads it completed (malformed ones too: those are answered 400).
        if self._head_timer is not None and self._request_count:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        SERVER_LOG.debug(
            "closed a connection that sent no complete request head in %.3g s", self._head_timeout
        )
        self.force_close()


class _HeadTimedServer(web.Server):
    """aiohttp's protocol factory, making :class:`_HeadTimedHandler` protocols."""

    def __init__(self, handler: Any, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.head_timeout = head_timeout

    def __call__(self) -> web.RequestHandler:
        return _HeadTimedHandler(self, loop=self._loop, head_timeout=self.head_timeout, **self._kwargs)


class _AppRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` serving through :class:`_HeadTimedServer`.

    ``_make_server`` is the one method every runner implements to build its server (aiohttp's
    ``AppRunner`` starts the application there, then builds a ``web.Server``); the server it
    built is copied into the factory that makes head-timed protocols, with the same handler,
    request factory and protocol options, before any socket is bound.
    """

    def __init__(self, app: web.Application, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.head_timeout = head_timeout

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _HeadTimedServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            head_timeout=self.head_timeout,
            **made._kwargs,
        )


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reuse_port: bool = False,
    head_timeout: float = HEAD_TIMEOUT_S,
    **runner: Any,
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://host:port``).

    ``runner`` goes to :class:`aiohttp.web.AppRunner` (``max_line_size`` defaults to
    :data:`MAX_REQUEST_LINE`, ``shutdown_timeout`` to :data:`SHUTDOWN_GRACE_S`,
    ``keepalive_timeout`` to :data:`KEEPALIVE_TIMEOUT_S`). A connection that has not sent a
    complete request head ``head_timeout`` seconds after it was made is closed (0: never; see
    :data:`HEAD_TIMEOUT_S`). ``reuse_port`` lets several processes serve one port
    (``SO_REUSEPORT``). Raises ``OSError`` when the address cannot be bound.
    """
    runner.setdefault("max_line_size", MAX_REQUEST_LINE)
    runner.setdefault("shutdown_timeout", SHUTDOWN_GRACE_S)
    runner.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
    # A client that hangs up cancels its handler: a long-lived stream frees its resources at once.
    runner.setdefault("handler_cancellation", True)
    runner.setdefault("logger", SERVER_LOG)
    app_runner = _AppRunner(app, access_log=None, handle_signals=False, head_timeout=head_timeout, **runner)
    await app_runner.setup()
    try:
        await web.TCPSite(app_runner, host, port, reuse_port=reuse_port or None).start()
        bound_host, bound_port = app_runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        await app_runner.cleanup()


async def wait_for_stop_signal() -> None:
    """Return at the first SIGINT or SIGTERM; a second one cancels the calling task (stop now).

    The caller then leaves its ``async with`` blocks, which stop servers within their grace
    period; a person who presses Ctrl-C again does not wait for it.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()


_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` on uvloop where it is installed (Linux, macOS), else on asyncio's loop.

    uvloop's event loop and transports, written in Cython over libuv, cut the per-request CPU
    of every server the project runs; nothing in the project depends on which loop it gets.
    The collector's first generation runs every 20,000 allocations instead of 700: a request
    allocates a few hundred objects, nearly all freed by reference counting, and a collection
    per couple of requests was a few percent of a busy server's CPU.
    """
    gc.set_threshold(20_000, 20, 20)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop wheels
        return asyncio.run(main)
    return uvloop.run(main)
