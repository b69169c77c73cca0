"""Helpers shared by the test suite: running participants (in-process or as processes) and polling."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiomqtt
import pytest

from aggregator import Aggregator, load_definition
from benchmarks._cluster import LIBFAKETIME as LIBFAKETIME  # re-exported for the tests
from benchmarks._cluster import skewed_clock
from contract import BrokerURL, serve_app
from order_saga import SAMPLES, SPECS
from order_saga.broker import MosquittoBroker, free_port, mosquitto_binary
from order_saga.demo import local_saga
from participants import ParticipantConfig, ParticipantService, StatusFaults

_T = TypeVar("_T")


def needs_mosquitto(test: _T) -> _T:
    """Marks a test that starts Mosquitto itself: ``broker``, and skipped where it is not installed
    (amqtt, the fallback, cannot restart with state and drops unacknowledged QoS 1 messages)."""
    skip = pytest.mark.skipif(mosquitto_binary() is None, reason="needs the mosquitto binary")
    marked: _T = pytest.mark.broker(skip(test))
    return marked


def needs_promtool(test: _T) -> _T:
    """Marks a test that runs ``promtool`` (Debian's ``prometheus`` package, which ``.ci/run``
    installs): skipped where it is not installed."""
    marked: _T = pytest.mark.skipif(
        shutil.which("promtool") is None,
        reason="needs promtool (the prometheus package; .ci/run installs it)",
    )(test)
    return marked


def order_body(outcome: str, order_id: str | None = None) -> dict[str, Any]:
    """A ``POST /orders`` body that drives the saga to ``outcome`` (a key of ``SAMPLES``)."""
    return SAMPLES[outcome].body(order_id)


@dataclass
class Saga:
    """The four participants' base URLs, and a client to talk to them."""

    urls: dict[str, str]
    http: aiohttp.ClientSession
    services: dict[str, ParticipantService] = field(default_factory=dict)

    async def place(self, outcome: str, order_id: str | None = None) -> str:
        async with self.http.post(f"{self.urls['order']}/orders", json=order_body(outcome, order_id)) as r:
            assert r.status == 202, await r.text()
            return str((await r.json())["workflow_id"])

    async def status(self, name: str, workflow_id: str) -> dict[str, Any] | None:
        async with self.http.get(f"{self.urls[name]}/status/{workflow_id}") as r:
            if r.status == 404:
                return None
            assert r.status == 200, await r.text()
            return dict(await r.json())

    async def wait_states(
        self, workflow_id: str, expected: Mapping[str, str | None], timeout: float = 15.0
    ) -> dict[str, dict[str, Any] | None]:
        """Poll until every participant's state equals ``expected``; return the last statuses."""
        deadline = time.monotonic() + timeout
        while True:
            got = {name: await self.status(name, workflow_id) for name in expected}
            states = {name: (s["state"] if s else None) for name, s in got.items()}
            if states == dict(expected):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{workflow_id}: states {states} != expected {dict(expected)}")
            await asyncio.sleep(0.05)


def config(broker: BrokerURL, prefix: str, db: Path, **faults: float) -> ParticipantConfig:
    """A participant config for tests: free port, given broker, prefix and database."""
    return ParticipantConfig(port=0, broker=broker, prefix=prefix, db=db, faults=StatusFaults(**faults))


@contextlib.asynccontextmanager
async def in_process_saga(broker: BrokerURL, prefix: str, tmp: Path) -> AsyncIterator[Saga]:
    """The four participants as in-process services on port 0, ready (broker connected)."""
    async with (
        local_saga(broker=broker, prefix=prefix, data_dir=tmp) as running,
        aiohttp.ClientSession() as http,
    ):
        urls = {name: svc.url for name, svc in running.services.items()}
        yield Saga(urls=urls, http=http, services=running.services)


class ParticipantProcess:
    """``python -m participants NAME`` as a real process, on a fixed free port and database."""

    def __init__(
        self,
        name: str,
        *,
        broker: BrokerURL,
        prefix: str,
        db: Path,
        extra: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env`` is added to this process's environment (e.g. :func:`skewed_clock`)."""
        self.name = name
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable, "-m", "participants", name, "--port", str(self.port), "--broker", str(broker),
            "--prefix", prefix, "--db", str(db), "--log-level", "WARNING", *extra,
        ]  # fmt: skip
        self.log = db.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{self.url}/readyz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready: {self.log.read_text()}")

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.asynccontextmanager
async def skewed_participant(
    name: str, broker: MosquittoBroker, prefix: str, tmp: Path, offset_s: float
) -> AsyncIterator[str]:
    """Participant ``name`` as a real process whose wall clock is ``offset_s`` off (libfaketime,
    :func:`skewed_clock`); its URL once ready, after checking its ``Date`` is that far off; always stopped."""
    proc = ParticipantProcess(
        name, broker=broker.url, prefix=prefix, db=tmp / f"{name}.sqlite3", env=skewed_clock(offset_s)
    )
    proc.start()
    try:
        async with aiohttp.ClientSession() as http:
            await proc.wait_ready(http)
            async with http.get(f"{proc.url}/healthz") as r:
                served = parsedate_to_datetime(r.headers["Date"]).timestamp()
        assert abs(served - time.time() - offset_s) < 5, "libfaketime did not shift the clock"
        yield proc.url
    finally:
        proc.kill()


@contextlib.asynccontextmanager
async def process_saga(
    broker: BrokerURL, prefix: str, tmp: Path
) -> AsyncIterator[tuple[Saga, dict[str, ParticipantProcess]]]:
    """The four participants as real processes through the participants CLI; always stopped on exit."""
    procs = {
        name: ParticipantProcess(name, broker=broker, prefix=prefix, db=tmp / f"{name}.sqlite3")
        for name in SPECS
    }
    try:
        for p in procs.values():
            p.start()
        async with aiohttp.ClientSession() as http:
            for p in procs.values():
                await p.wait_ready(http)
            yield Saga(urls={n: p.url for n, p in procs.items()}, http=http), procs
    finally:
        for p in procs.values():
            p.kill()


class Listener:
    """An outside MQTT client that records every message on ``topic_filter`` (QoS 1).

    Watermarks are kept apart (``watermarks``) unless the filter names them.
    """

    def __init__(self, broker: BrokerURL, topic_filter: str) -> None:
        self.broker = broker
        self.filter = topic_filter
        self.messages: list[tuple[str, bytes]] = []
        self.watermarks: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await client.subscribe(self.filter, qos=1)
            self._ready.set()
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                if "/watermark/" in m.topic.value and "watermark" not in self.filter:
                    self.watermarks.append((m.topic.value, payload))  # periodic, not events
                    continue
                self.messages.append((m.topic.value, payload))

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on exactly ``topic``."""
        return [p for t, p in self.messages if t == topic]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.02)


async def publish(broker: BrokerURL, topic: str, payloads: list[bytes]) -> None:
    """Publish raw payloads at QoS 1 from an outside client."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


@dataclass
class Served:
    """An aggregator served over HTTP on port 0."""

    agg: Any
    url: str


@contextlib.asynccontextmanager
async def serve_aggregator(
    urls: Mapping[str, str], *, token: str | None = None, **settings: Any
) -> AsyncIterator[Served]:
    """The packaged definition pointed at ``urls``, with ``settings`` changed, served on port 0."""
    from aggregator import Aggregator, load_definition
    from aggregator.web import create_app

    definition = load_definition().with_urls(dict(urls))
    if settings:
        definition = definition.with_settings(**settings)
    async with Aggregator(definition) as agg, serve_app(create_app(agg, token=token)) as url:
        yield Served(agg, url)


@contextlib.asynccontextmanager
async def foreign_server(handler: Any) -> AsyncIterator[str]:
    """A misbehaving third-party HTTP server (not one of ours) on port 0; yields its base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as url:
        yield url


def status_body(workflow_id: str, state: str, version: int, participant: str = "payment") -> dict[str, Any]:
    """A well-formed participant status answer."""
    return {
        "participant": participant,
        "workflow_id": workflow_id,
        "state": state,
        "version": version,
        "updated_at": "2026-11-25T12:00:00.000000Z",
        "history": [{"state": state, "version": version, "at": "2026-11-25T12:00:00.000000Z"}],
        "data": {},
    }


async def counts(http: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """A participant's /healthz counters."""
    async with http.get(f"{url}/healthz") as r:
        return dict((await r.json())["counts"])


async def wait_sagas_done(agg: Any, expected: Mapping[str, Any], timeout: float) -> dict[str, str]:
    """Poll ``agg`` (an open :class:`aggregator.Aggregator`) until every workflow in ``expected``
    (id → its ``SAMPLES`` entry) shows the sample's overall state and part states, or ``timeout``
    passes; return ``{workflow_id: state}`` of those that did."""
    done: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(expected) and time.monotonic() < deadline:
        views, _ = await agg.views([w for w in expected if w not in done])
        done |= {
            v.workflow_id: v.state
            for v in views
            if v.state == expected[v.workflow_id].state
            and {n: p.state for n, p in v.parts.items()} == expected[v.workflow_id].parts
        }
        await asyncio.sleep(0.5)
    return done


@contextlib.asynccontextmanager
async def some_participants(
    broker: Any, prefix: str, tmp: Path, names: list[str]
) -> AsyncIterator[dict[str, str]]:
    """Some of the saga's participants, in-process on ``prefix`` and ``broker`` (a test broker); their base URLs."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name in names:
            cfg = config(broker.url, prefix, tmp / f"{name}.sqlite3")
            service = await stack.enter_async_context(ParticipantService(SPECS[name], config=cfg))
            await service.wait_ready()
            urls[name] = service.url
        yield urls


def gateway_example() -> Any:
    """``examples/gateway.py`` imported as a module (it is a file to copy, not a package)."""
    return _example("gateway")


def fastapi_gateway_example() -> Any:
    """``examples/fastapi_gateway.py`` imported as a module, as :func:`gateway_example` does."""
    return _example("fastapi_gateway")


def _example(name: str) -> Any:
    import importlib.util
    import sys

    module_name = f"{name}_example"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


OUTCOMES = sorted(SAMPLES)
#: Exact history lengths per outcome: a duplicate application would add an entry.
HISTORY_LENGTHS = {
    "happy": {"order": 2, "payment": 1, "inventory": 1, "shipping": 1},
    "declined": {"order": 2, "payment": 1, "inventory": 0, "shipping": 0},
    "out-of-stock": {"order": 2, "payment": 2, "inventory": 1, "shipping": 0},
    "unshippable": {"order": 2, "payment": 2, "inventory": 2, "shipping": 1},
}


async def assert_outcomes(saga: Saga, placed: dict[str, str], timeout: float = 30.0) -> None:
    """Every workflow reaches its outcome's states, with histories of exactly the right length."""

    async def check(wf: str, outcome: str) -> None:
        got = await saga.wait_states(wf, SAMPLES[outcome].parts, timeout=timeout)
        lengths = {name: len(s["history"]) if s else 0 for name, s in got.items()}
        assert lengths == HISTORY_LENGTHS[outcome], (wf, outcome, lengths)
        for status in got.values():
            if status:
                assert [h["version"] for h in status["history"]] == list(range(1, status["version"] + 1))

    await asyncio.gather(*(check(wf, outcome) for wf, outcome in placed.items()))


@contextlib.asynccontextmanager
async def aggregator_process(*args: str) -> AsyncIterator[str]:
    """``python -m aggregator serve ARGS --port P``, ready; always stopped."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "serve", *args, "--port", str(port),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("aggregator did not become ready")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def run_python(
    *argv: str, timeout: float = 120.0, merged: bool = True, cwd: Path | None = None
) -> tuple[int, str, str]:
    """``python ARGV`` run to its end in ``cwd``, with no stdin (killed, and the test failed, past
    ``timeout`` seconds): the exit status, what it printed on stdout and on stderr (on stdout,
    and "" here, if ``merged``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), (err or b"").decode()


async def cli(*args: str) -> tuple[int, str]:
    """``python -m aggregator ARGS`` run to its end: the exit status and what it printed."""
    code, out, _ = await run_python("-m", "aggregator", *args)
    return code, out


@contextlib.asynccontextmanager
async def events_aggregator(
    saga: Saga, broker: MosquittoBroker, prefix: str, heard: bool = True, **settings: Any
) -> AsyncIterator[Aggregator]:
    """An aggregator in events mode on ``prefix``, subscribed (and, with ``heard``, having heard
    from every participant on it) before it is yielded."""
    definition = load_definition().with_urls(saga.urls).with_settings(freshness="events", **settings)
    async with Aggregator(definition, broker=broker.url, prefix=prefix) as agg:
        feed = agg.feed
        assert feed is not None
        async with asyncio.timeout(10):
            await feed.up.wait()
            # And heard from every participant (they publish a watermark a second on the saga's
            # prefix): only then are a new workflow's other parts known absent without asking.
            while heard and not set(saga.urls) <= set(feed.heard):
                await asyncio.sleep(0.02)
        yield agg


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Return once ``predicate()`` holds (awaited, when it gives an awaitable), polled every
    10 ms (``TimeoutError`` past ``timeout``)."""
    async with asyncio.timeout(timeout):
        while True:
            held = predicate()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
            await asyncio.sleep(0.01)


Peer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_peer(
    handle: Peer, *, context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on a free port running ``handle`` per connection; its URL, and the list of
    connections it accepted (one entry per connection, its count of requests read)."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> str:
    """One request's head (these clients send no bodies)."""
    return (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")


@contextlib.contextmanager
def server_process(*argv: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m ARGV --port P`` on a free port (no token from the environment), once its
    ``/healthz`` answers; yields its URL and process, and checks it is still alive after the
    block; always stopped."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PARTICIPANT_TOKEN", "AGGREGATOR_TOKEN")}
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv, "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not _answers(f"{url}/healthz"):
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not come up"
            time.sleep(0.05)
        yield url, proc
        assert proc.poll() is None, "the server died"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
        return bool(r.status == 200)
    return False
