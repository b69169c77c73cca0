"""The aggregator's participant client (aggregator/_http1.py) against peers written byte by byte.

Each peer is a real TCP server on port 0 that answers with exactly the bytes a test gives it:
framings, pieces, closes, lies and garbage, as a participant (or something pretending to be
one) could send them over a real network.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import Aggregator, load_definition
from aggregator._aiohttp import AiohttpTransport
from aggregator._http1 import MAX_HEAD_BYTES, Http1Pool
from aggregator._transport import TransportError
from aggregator.errors import PartFailure
from order_saga import SAMPLES

from ..support import Peer, Saga, raw_peer, read_request, status_body


def answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


def status_and_body(answered: tuple[int, Mapping[str, str], bytes]) -> tuple[int, bytes]:
    """What a call answered, without its headers."""
    status, _, body = answered
    return status, body


def keep_answering(body: bytes) -> Peer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(body))
            await writer.drain()

    return handle


async def test_framings_and_pieces_are_read_whole() -> None:
    """Content-Length in pieces, chunked in pieces, and a body that ends with the connection."""
    body = b'{"state":"AUTHORIZED","padding":"' + b"x" * 5000 + b'"}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        path = head.split(" ")[1]
        if path == "/length":
            raw = answer(body)
            for i in range(0, len(raw), 700):  # a write per 700 bytes, with pauses
                writer.write(raw[i : i + 700])
                await writer.drain()
                await asyncio.sleep(0.002)
        elif path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 1000):
                piece = body[i : i + 1000]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.002)
            writer.write(b"0\r\n\r\n")
        else:  # no length: the body runs to the close
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body[:3000])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(body[3000:])
            await writer.drain()
            writer.close()

    pool = Http1Pool()
    async with raw_peer(handle) as (url, _):
        for path in ("/length", "/chunked", "/close"):
            assert status_and_body(await pool.request("GET", url + path, {}, max_bytes=1 << 20)) == (
                200,
                body,
            )
    await pool.aclose()


async def test_answer_headers_come_back_and_are_read_in_any_case() -> None:
    """The answer's headers are returned, looked up case-insensitively (``Date`` dates the participant's clock)."""
    date = "Sun, 06 Dec 2026 05:00:00 GMT"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}", extra=f"date: {date}\r\nX-Twice: first\r\nX-Twice: second\r\n"))
        await writer.drain()

    pool = Http1Pool()
    async with raw_peer(handle) as (url, _):
        status, headers, body = await pool.request("GET", url + "/status/a", {}, max_bytes=100)
    await pool.aclose()
    assert (status, body) == (200, b"{}")
    assert headers["Date"] == headers["DATE"] == date
    assert headers.get("x-twice") == "first"
    assert "content-type" in headers and "Retry-After" not in headers
    assert sorted(k.lower() for k in headers) == ["content-length", "content-type", "date", "x-twice"]


async def test_connections_are_reused_and_a_stale_one_is_retried_once() -> None:
    """Ten sequential calls share one connection; after the peer closes it while idle, the next
    call goes out again on a new connection and succeeds."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(10):  # ten answers, then the connection is closed while idle
            await read_request(reader)
            served.append(1)
            writer.write(answer(b"{}"))
            await writer.drain()

    pool = Http1Pool()
    async with raw_peer(handle) as (url, connections):
        for _ in range(10):
            assert status_and_body(await pool.request("GET", url + "/status/a", {}, max_bytes=100)) == (
                200,
                b"{}",
            )
        assert connections == [0]
        await asyncio.sleep(0.05)  # the peer has closed the idle connection by now
        assert status_and_body(await pool.request("GET", url + "/status/a", {}, max_bytes=100)) == (
            200,
            b"{}",
        )
        assert len(connections) == 2
        assert len(served) == 11
    await pool.aclose()


async def test_a_cancelled_call_never_hands_its_late_answer_to_the_next() -> None:
    """The first answer comes after its caller gave up; the next call on the same host must get
    its own answer, never the late one (the connection of a cancelled call is closed)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request(reader)
            which = head.split(" ")[1].rpartition("/")[2]
            if which == "slow":
                await asyncio.sleep(0.2)
            writer.write(answer(json.dumps({"for": which}).encode()))
            await writer.drain()

    pool = Http1Pool()
    async with raw_peer(handle) as (url, connections):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.request("GET", url + "/status/slow", {}, max_bytes=100)
        status, _, body = await pool.request("GET", url + "/status/fast", {}, max_bytes=100)
        assert (status, json.loads(body)) == (200, {"for": "fast"})
        assert len(connections) == 2
        await asyncio.sleep(0.25)  # the late answer lands on a closed connection
        status, _, body = await pool.request("GET", url + "/status/again", {}, max_bytes=100)
        assert json.loads(body) == {"for": "again"}
    await pool.aclose()


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (answer(b"x" * 2000), "larger than 1000 bytes"),  # announced too long
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"100\r\n"
            + b"x" * 256
            + b"\r\n" * 1
            + b"400\r\n"
            + b"x" * 1024
            + b"\r\n0\r\n\r\n",
            "larger than 1000 bytes",
        ),
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"y" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n", "headers larger"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}", "not an HTTP answer"),
    ],
    ids=["content-length", "chunked", "head", "not-http", "bad-length"],
)
async def test_answers_it_refuses_are_bad_response(raw: bytes, detail: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        await reader.read()  # until the client closes

    pool = Http1Pool()
    async with raw_peer(handle) as (url, _):
        with pytest.raises(TransportError) as caught:
            await pool.request("GET", url + "/status/a", {}, max_bytes=1000)
    assert caught.value.kind == "bad_response"
    assert detail in str(caught.value)
    await pool.aclose()


async def test_no_answer_is_unavailable() -> None:
    """Refused connection, and a connection closed before the answer ended: ``unavailable``."""
    pool = Http1Pool()
    async with raw_peer(keep_answering(b"{}")) as (url, _):
        pass  # closed: nothing listens there now
    with pytest.raises(TransportError) as refused:
        await pool.request("GET", url + "/status/a", {}, max_bytes=100)
    assert refused.value.kind == "unavailable"

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"half')
        await writer.drain()

    async with raw_peer(cut) as (url, _):
        with pytest.raises(TransportError) as halfway:
            await pool.request("GET", url + "/status/a", {}, max_bytes=100)
    assert halfway.value.kind == "unavailable"
    await pool.aclose()


async def test_the_request_carries_the_callers_headers_and_no_body() -> None:
    """What the participant receives: the path as given, Host, the caller's headers; a POST says it has no body."""
    heads: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            heads.append(await read_request(reader))
            writer.write(answer(b"{}", status="202 Accepted"))
            await writer.drain()

    pool = Http1Pool()
    async with raw_peer(handle) as (url, _):
        host = url.removeprefix("http://")
        await pool.request(
            "GET",
            url + "/status?workflow_id=a%2Fb&workflow_id=c",
            {"Authorization": "Bearer t"},
            max_bytes=100,
        )
        assert status_and_body(
            await pool.request("POST", url + "/outbox/a/republish", {}, max_bytes=100)
        ) == (202, b"{}")
    await pool.aclose()
    assert heads[0] == (
        f"GET /status?workflow_id=a%2Fb&workflow_id=c HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer t\r\n\r\n"
    )
    assert heads[1] == f"POST /outbox/a/republish HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_an_https_participant_is_called_over_tls(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A participant behind TLS, its certificate trusted through SSL_CERT_FILE: a view over https."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    body = json.dumps(status_body("w-tls", "AUTHORIZED", 2)).encode()
    async with raw_peer(keep_answering(body), context=context) as (url, _):
        definition = load_definition()
        definition = definition.model_copy(
            update={"participants": {"payment": definition.participants["payment"]}, "orderings": []}
        ).with_urls({"payment": url})
        async with Aggregator(definition) as agg:
            view = await agg.view("w-tls")
    part = view.parts["payment"]
    assert (part.state, part.version, part.source, part.error) == ("AUTHORIZED", 2, "live", None)


async def test_two_answers_to_one_request_close_the_connection() -> None:
    """A peer that writes a second answer behind the first: the caller gets the first, and the
    connection is never used again (the second can never pass for the next call's answer)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request(reader)
            which = head.split(" ")[1].rpartition("/")[2]
            writer.write(answer(json.dumps({"for": which}).encode()) + answer(b'{"for":"forged"}'))
            await writer.drain()

    pool = Http1Pool()
    async with raw_peer(handle) as (url, connections):
        for which in ("a", "b"):
            status, _, body = await pool.request("GET", f"{url}/status/{which}", {}, max_bytes=100)
            assert (status, json.loads(body)) == (200, {"for": which})
        assert len(connections) == 2
    await pool.aclose()


async def test_a_participant_that_never_answers_a_redrive_times_out() -> None:
    """Redrive and the stalled scan call participants outside any read's deadline: the
    participant's own ``timeout_ms`` bounds them."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    async with raw_peer(hang) as (url, _):
        definition = load_definition()
        payment = definition.participants["payment"].model_copy(update={"timeout_ms": 200})
        definition = definition.model_copy(
            update={"participants": {"payment": payment}, "orderings": [], "initiator": "payment"}
        ).with_urls({"payment": url})
        async with Aggregator(definition) as agg:
            started = time.perf_counter()
            report = await agg.redrive("w-1")
            redrive_s = time.perf_counter() - started
            with pytest.raises(PartFailure) as scan:
                await agg.stalled()
            scan_s = time.perf_counter() - started - redrive_s
    assert report == {"payment": {"error": "timeout", "detail": "no answer within 200 ms"}}
    assert scan.value.kind == "timeout"
    assert 0.15 < redrive_s < 1.0 and 0.15 < scan_s < 1.0


async def test_a_header_with_a_line_break_is_never_sent() -> None:
    heads: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))

    pool = Http1Pool()
    async with raw_peer(handle) as (url, connections):
        with pytest.raises(ValueError, match="line break"):
            await pool.request(
                "GET", url + "/status/a", {"Authorization": "Bearer x\r\nX-Evil: 1"}, max_bytes=100
            )
    await pool.aclose()
    assert (heads, connections) == ([], [])


async def test_the_session_transport_bounds_answers_follows_no_redirect_and_translates_errors() -> None:
    """Over an application's aiohttp session: headers come back, an answer over the bound (even
    chunked, with no length) is ``bad_response``, a redirect is returned, not followed, a refused
    connection is ``unavailable``, and closing the transport leaves the session open."""
    big = b"x" * 200

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            path = (await read_request(reader)).split(" ")[1]
            if path == "/big":
                writer.write(answer(big))
            elif path == "/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(big), 50):
                    writer.write(b"32\r\n" + big[i : i + 50] + b"\r\n")
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            elif path == "/moved":
                writer.write(answer(b"", status="302 Found", extra="Location: /elsewhere\r\n"))
            else:
                writer.write(answer(b"{}", extra="Date: Sun, 06 Dec 2026 05:00:00 GMT\r\n"))
            await writer.drain()

    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session)
        async with raw_peer(handle) as (url, _):
            status, headers, body = await transport.request("GET", url + "/status/a", {}, max_bytes=100)
            assert (status, body, headers["date"]) == (200, b"{}", "Sun, 06 Dec 2026 05:00:00 GMT")
            for path in ("/big", "/chunked"):
                with pytest.raises(TransportError) as refused:
                    await transport.request("GET", url + path, {}, max_bytes=100)
                assert refused.value.kind == "bad_response"
            moved, _, _ = await transport.request("GET", url + "/moved", {}, max_bytes=100)
            assert moved == 302
        async with raw_peer(handle) as (dead, _):
            pass  # closed: nothing listens there now
        with pytest.raises(TransportError) as gone:
            await transport.request("GET", dead + "/status/a", {}, max_bytes=100)
        assert gone.value.kind == "unavailable"
        assert isinstance(gone.value.__cause__, aiohttp.ClientError)
        await transport.aclose()
        assert not session.closed


async def test_an_injected_session_makes_every_call_and_stays_open(saga: Saga) -> None:
    """A gateway that gives its own aiohttp session (its proxies, TLS, tracing) gets every
    participant call made through it, and gets it back open."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    sent: list[str] = []

    async def on_start(session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        sent.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        async with Aggregator(load_definition().with_urls(saga.urls), session=session) as agg:
            view = await agg.view(wf)
        assert not session.closed
    assert view.state == "COMPLETED"
    assert sorted(sent) == [f"/status/{wf}"] * 4
