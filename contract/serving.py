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


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False, **runner: Any
) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``http://host:port``).

    ``runner`` goes to :class:`aiohttp.web.AppRunner` (``max_line_size`` defaults to
    :data:`MAX_REQUEST_LINE`, ``shutdown_timeout`` to :data:`SHUTDOWN_GRACE_S`). ``reuse_port``
    lets several processes serve one port (``SO_REUSEPORT``). Raises ``OSError`` when the address cannot be bound.
    """
    runner.setdefault("max_line_size", MAX_REQUEST_LINE)
    runner.setdefault("shutdown_timeout", SHUTDOWN_GRACE_S)
    # A client that hangs up cancels its handler: a long-lived stream frees its resources at once.
    runner.setdefault("handler_cancellation", True)
    runner.setdefault("logger", SERVER_LOG)
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
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
