"""A lean HTTP/1.1 client for participants' status APIs: keep-alive connections, bounded answers.

The aggregator's own :class:`~aggregator._transport.Transport`, opened on entry.

Every cold view makes one call per participant, so the cost of one call is the cost of the
cold path. ``aiohttp``'s client spends about 75 µs of CPU on a GET against a local server
(request object, cookie jar, URL parsing, timers, stream reader); this one spends a fraction
of that: the request line is formatted once per call, the answer is parsed by ``httptools``
(llhttp, the parser of Node.js, kept by the authors of uvloop), and connections are reused
from a per-host pool. It does what the aggregator needs and no more: ``GET`` and bodiless
``POST``, headers given by the caller, answers of any framing (``Content-Length``, chunked, or
until the connection closes) arriving in any number of pieces, a bound on the answer's size,
TLS for ``https`` participants. Redirects are not followed (only the definition's URLs are
ever called), cookies are not kept, proxies are not used.

A call that is cancelled (its deadline, a winning hedge) closes its connection: a connection
is only reused after a complete answer that allows it. A reused connection that the server
closed while it was idle is retried once on a new one, before any byte of the answer came.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

from ._transport import RawHeaders, TransportError

#: The longest status line and headers accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024
#: A pooled connection idle for longer than this is closed instead of reused (servers close
#: idle connections too; aiohttp's own server after 75 s).
IDLE_S = 30.0
#: Idle connections kept per host; more are closed when released.
MAX_IDLE = 256


_Answered = tuple[int, list[tuple[bytes, bytes]], bytes]
"""Status, raw header pairs, body."""


class _Answer(asyncio.Protocol):
    """One connection: sends a request, collects the answer through ``httptools``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[_Answered] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._max_bytes = 0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._head = 0
        self._headers_done = False
        self._framed = False
        self._length = False
        self._complete = False
        self._keep_alive = False
        self.received = False
        """Some byte of the current answer arrived."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._waiter is None or self._waiter.done():
            self._close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            self._fail(
                cause if isinstance(cause, TransportError) else TransportError("bad_response", str(exc))
            )
        except httptools.HttpParserUpgrade:  # the answer (a 101) is complete: its status says no
            self._close()
        except httptools.HttpParserError as exc:
            self._fail(TransportError("bad_response", f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done and not self._framed:  # the answer was delimited by the close
                self._finish()
            else:
                detail = str(exc) if exc else "the participant closed the connection"
                self._waiter.set_exception(TransportError("unavailable", detail))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: the connection is out of step
            raise TransportError("bad_response", "more than one answer to a request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head > MAX_HEAD_BYTES:
            raise TransportError("bad_response", f"answer headers larger than {MAX_HEAD_BYTES} bytes")
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            self._length = True  # chunked: llhttp rejects any other coding of a response it cannot frame
        elif lowered == b"content-length":
            self._length = True
            try:
                length = int(value)
            except ValueError:
                return  # llhttp rejects it itself
            if length > self._max_bytes:
                raise TransportError("bad_response", f"answer larger than {self._max_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        # Without a length or chunks, the body ends when the connection closes.
        self._framed = self._length or self._status in (204, 304) or 100 <= self._status < 200

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_bytes:
            raise TransportError("bad_response", f"answer larger than {self._max_bytes} bytes")
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._finish()

    # calls

    def send(self, request: bytes, max_bytes: int) -> asyncio.Future[_Answered]:
        """Send ``request``; the future of its (status, headers, body)."""
        assert self.transport is not None
        self._waiter = self._loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._max_bytes = max_bytes
        self._status = self._size = self._head = 0
        self._chunks = []
        self._headers = []
        self._headers_done = self._complete = self._keep_alive = self.received = False
        self._framed = self._length = False
        self.transport.write(request)
        return self._waiter

    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def _finish(self) -> None:
        self._complete = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            chunks = self._chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            waiter.set_result((self._status, self._headers, body))

    def _fail(self, error: TransportError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


_Origin = tuple[str, str, int, str]
"""A URL's scheme, host, port and authority (``netloc``), as :func:`split_url` reads them."""
_origins: dict[str, _Origin] = {}
"""Origins already read, by the text before their path (the few base URLs a pool calls)."""


def _origin(text: str) -> _Origin:
    parts = urlsplit(text)
    scheme = parts.scheme
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80), parts.netloc


def split_url(url: str) -> tuple[str, str, int, str, str]:
    """``url``'s scheme, host, port, authority and request target (path and query), as
    ``urlsplit`` reads them; the origin is read once per base URL (each call's URL is new: its
    ids), and only URLs ``urlsplit`` would alter (a fragment, a tab or line break, spaces at either
    end, an empty query) go through it whole."""
    start = url.find("://")
    slash = url.find("/", start + 3) if url[:start].lower() in ("http", "https") else -1
    if (
        slash > 0
        and url[0] > " "
        and url[-1] > " "
        and url[-1] != "?"
        and "#" not in url
        and "\t" not in url
        and "\r" not in url
        and "\n" not in url
        and "?" not in url[:slash]
    ):
        base = url[:slash]
        origin = _origins.get(base)
        if origin is None:
            if len(_origins) >= 256:
                _origins.clear()
            origin = _origins[base] = _origin(base)
        if origin[3]:  # an authority, so the path starts at that slash
            return (*origin, url[slash:])
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (*_origin(url), target)


class Http1Pool:
    """Keep-alive connections to participants, per host; calls with bounded answers (a :class:`Transport`)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Answer]] = {}
        self._open: set[_Answer] = set()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], *, max_bytes: int
    ) -> tuple[int, RawHeaders, bytes]:
        """One call: its status, headers and body (at most ``max_bytes``), or :class:`TransportError`."""
        if self._closed:
            raise TransportError("unavailable", "client closed")
        scheme, host, port, netloc, target = split_url(url)
        head = [f"{method} {target} HTTP/1.1\r\nHost: {netloc}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"a line break in the {name!r} header")  # never split a request
            head.append(f"{name}: {value}\r\n")
        if method != "GET":
            head.append("Content-Length: 0\r\n")
        head.append("\r\n")
        request = "".join(head).encode("latin-1")
        key = (scheme, host, port)
        for attempt in (0, 1):
            conn, reused = await self._acquire(key)
            try:
                status, raw, body = await conn.send(request, max_bytes)
            except TransportError as exc:
                conn._close()
                self._open.discard(conn)
                if reused and attempt == 0 and exc.kind == "unavailable" and not conn.received:
                    continue  # the server closed it while idle: once more, on a new connection
                raise
            except BaseException:  # cancelled mid-call: the answer may still come, so never reuse
                conn._close()
                self._open.discard(conn)
                raise
            self._release(key, conn)
            return status, RawHeaders(raw), body
        raise AssertionError("unreachable")

    async def _acquire(self, key: tuple[str, str, int]) -> tuple[_Answer, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                return conn, True
            conn._close()
            self._open.discard(conn)
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, conn = await loop.create_connection(lambda: _Answer(loop), host, port, ssl=context)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError("unavailable", f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(conn)
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, False

    def _release(self, key: tuple[str, str, int], conn: _Answer) -> None:
        idle = self._idle.setdefault(key, [])
        if self._closed or not conn.reusable() or len(idle) >= MAX_IDLE:
            conn._close()
            self._open.discard(conn)
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def aclose(self) -> None:
        """Close every connection."""
        self._closed = True
        for conn in list(self._open):
            conn._close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
