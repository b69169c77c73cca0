"""Operations on the real servers (the aggregator and a participant): Prometheus metrics that
promtool accepts, and connections that send no request head, or go idle, closed in bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from aggregator import Aggregator, load_definition
from aggregator.web import create_app
from contract import serve_app

from ..support import needs_promtool, server_process

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The shortened request-head timeout of these tests, and the keep-alive bound in-process.
HEAD_S = 1.0
KEEPALIVE_S = 2.0
#: How late a close may come (a loaded CI machine), and how early (timer granularity).
LATE_S = 0.8
EARLY_S = 0.1


@contextlib.contextmanager
def process(*argv: str) -> Iterator[str]:
    """``python -m ARGV --port P`` on a free port, until its /healthz answers; yields its URL; always stopped."""
    with server_process(*argv) as (url, _):
        yield url


def participant_argv(tmp: Path) -> tuple[str, ...]:
    """A participant process's command line: its own database, a broker that is not there."""
    return ("participants", "payment", "--broker", "mqtt://127.0.0.1:1", "--db", str(tmp / "payment.sqlite3"))


# -- /metrics ---------------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize("server", ["aggregator", "participant"])
@pytest.mark.slow
async def test_metrics_pass_promtool_check_metrics(server: str, tmp_path: Path) -> None:
    """Each real server's /metrics has the exact text type, process_* series, and promtool finds nothing to say."""
    argv = ("aggregator", "serve") if server == "aggregator" else participant_argv(tmp_path)
    with process(*argv) as url:
        async with aiohttp.ClientSession() as http:
            if server == "participant":
                async with http.get(f"{url}/status/p-1") as r:
                    assert r.status == 404
            async with http.get(f"{url}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == METRICS_TYPE
                body = await r.read()
    text = body.decode()
    assert "\nprocess_cpu_seconds_total " in text and "\nprocess_resident_memory_bytes " in text
    if server == "participant":
        assert 'participant_status_requests_total{participant="payment"} 1.0' in text
        assert 'participant_outbox_unsent{participant="payment"} 0.0' in text
        assert 'participant_broker_connected{participant="payment"} 0.0' in text
    check = await asyncio.to_thread(
        subprocess.run, ["promtool", "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b""), check


# -- request-head and keep-alive timeouts -----------------------------------------------------


@contextlib.asynccontextmanager
async def in_process(head_s: float = HEAD_S) -> AsyncIterator[str]:
    """An aggregator served by ``serve_app`` in this process, with shortened timeouts.

    aiohttp also bounds a connection that has not sent a request by the keep-alive timeout, so
    that one is kept longer than a head timeout longer than :data:`KEEPALIVE_S`.
    """
    keepalive_s = KEEPALIVE_S if head_s < KEEPALIVE_S else head_s + KEEPALIVE_S
    async with (
        Aggregator(load_definition()) as agg,
        serve_app(create_app(agg), head_timeout=head_s, keepalive_timeout=keepalive_s) as url,
    ):
        yield url


@contextlib.asynccontextmanager
async def served(kind: str, head_s: float = HEAD_S) -> AsyncIterator[str]:
    """The aggregator in-process, or as a real ``python -m aggregator serve --head-timeout``."""
    if kind == "in-process":
        async with in_process(head_s) as url:
            yield url
    else:
        with process("aggregator", "serve", "--head-timeout", str(head_s)) as url:
            yield url


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def closed_after(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, since: float
) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and how long after ``since`` it closed it."""
    try:
        async with asyncio.timeout(HEAD_S + KEEPALIVE_S + 5):
            got = await reader.read()
    finally:
        writer.close()
    return got, time.monotonic() - since


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("kind", ["in-process", "process"])
@pytest.mark.slow
async def test_a_connection_without_a_complete_head_is_closed_after_the_timeout(kind: str) -> None:
    """A socket that sends nothing and one that sends half a request line are closed, unanswered, after the head timeout; a slow but complete request within it is answered."""
    async with served(kind) as url:

        async def silent() -> tuple[bytes, float]:
            reader, writer = await connect(url)
            return await closed_after(reader, writer, time.monotonic())

        async def half_line() -> tuple[bytes, float]:
            reader, writer = await connect(url)
            start = time.monotonic()
            writer.write(b"GET /healthz HT")
            await writer.drain()
            return await closed_after(reader, writer, start)

        async def slow_but_complete() -> bytes:
            reader, writer = await connect(url)
            try:
                for i in range(0, len(HEALTHZ), 6):  # the head in 6-byte pieces over about half the timeout
                    writer.write(HEALTHZ[i : i + 6])
                    await writer.drain()
                    await asyncio.sleep(HEAD_S / 14)
                async with asyncio.timeout(5):
                    return await reader.readuntil(b"\r\n\r\n")
            finally:
                writer.close()

        (silent_got, silent_s), (half_got, half_s), answered = await asyncio.gather(
            silent(), half_line(), slow_but_complete()
        )
    assert answered.startswith(b"HTTP/1.1 200 "), answered
    for got, elapsed in ((silent_got, silent_s), (half_got, half_s)):
        assert got == b""
        assert HEAD_S - EARLY_S <= elapsed <= HEAD_S + LATE_S, elapsed


@pytest.mark.parametrize("kind", ["in-process", "process"])
@pytest.mark.slow
async def test_500_idle_sockets_do_not_stop_a_normal_client(kind: str) -> None:
    """With 500 connections open and silent, a normal client is answered at once, and the 500 are all closed after the head timeout."""
    head_s = 3.0  # long enough to open 500 sockets on a loaded machine before the first is closed
    async with served(kind, head_s) as url:
        start = time.monotonic()
        idle = [await connect(url) for _ in range(500)]
        opened = time.monotonic()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/healthz") as r:
                    assert r.status == 200
                assert time.monotonic() - opened < 0.5
            assert time.monotonic() - start < head_s  # the normal client was served while all 500 were open
            async with asyncio.timeout(head_s + LATE_S + 2):
                got = await asyncio.gather(*(reader.read() for reader, _ in idle))
            assert got == [b""] * 500
            assert head_s - EARLY_S <= time.monotonic() - start  # none closed before its timeout
            assert time.monotonic() - opened <= head_s + LATE_S  # the last opened closed in time
        finally:
            for _, writer in idle:
                writer.close()


@pytest.mark.slow
async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() -> None:
    """After a response, a kept-alive connection that sends nothing more is closed after keepalive_timeout, not the head timeout."""
    async with in_process() as url:
        reader, writer = await connect(url)
        writer.write(HEALTHZ)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
        )
        await reader.readexactly(length)
        got, elapsed = await closed_after(reader, writer, time.monotonic())
    assert got == b""
    assert KEEPALIVE_S - EARLY_S <= elapsed <= KEEPALIVE_S + LATE_S, elapsed


@pytest.mark.slow
async def test_a_participant_closes_a_silent_connection_after_its_head_timeout(tmp_path: Path) -> None:
    """``python -m participants payment --head-timeout 1``: a socket that sends nothing is closed,
    unanswered, after about a second; one that sends a request is answered."""
    with process(*participant_argv(tmp_path), "--head-timeout", str(HEAD_S)) as url:
        reader, writer = await connect(url)
        got, elapsed = await closed_after(reader, writer, time.monotonic())
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as r:
            assert r.status == 200
    assert got == b""
    assert HEAD_S - EARLY_S <= elapsed <= HEAD_S + LATE_S, elapsed
