"""Behind a real proxy: nginx under a path prefix, haproxy, and events-mode replicas behind haproxy.

The proxy configurations are the ones docs/proxies.md shows: each test reads the marked block
from the page and only fills in addresses (and, for nginx, the test's own pid, log and temp
paths), so the page cannot drift from what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web

from aggregator.web import create_app
from contract import serve_app
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker, free_port

from ..support import OUTCOMES, Saga, events_aggregator, foreign_server, serve_aggregator, status_body

_T = TypeVar("_T", bound=Callable[..., Any])

DOC = Path(__file__).resolve().parents[2] / "docs" / "proxies.md"
NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"


def needs_nginx(test: _T) -> _T:
    """Marks a test that starts nginx (Debian's ``nginx`` package, which ``.ci/run`` installs):
    skipped where it is not installed."""
    marked: _T = pytest.mark.skipif(
        not os.access(NGINX, os.X_OK), reason=f"needs {NGINX} (the nginx package; .ci/run installs it)"
    )(test)
    return marked


def needs_haproxy(test: _T) -> _T:
    """Marks a test that starts haproxy (Debian's ``haproxy`` package, which ``.ci/run`` installs):
    skipped where it is not installed."""
    marked: _T = pytest.mark.skipif(
        not os.access(HAPROXY, os.X_OK), reason=f"needs {HAPROXY} (the haproxy package; .ci/run installs it)"
    )(test)
    return marked


def doc_block(name: str) -> str:
    """The fenced block after ``<!-- tested: NAME -->`` in docs/proxies.md."""
    match = re.search(rf"<!-- tested: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/proxies.md has no block marked {name}"
    return match.group(1)


def _addr(url: str) -> str:
    return urlsplit(url).netloc


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _write(tmp: Path, name: str, text: str) -> Path:
    tmp.mkdir(exist_ok=True)
    (tmp / name).write_text(text)
    return tmp / name


async def _wait_port(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.returncode is None, f"proxy exited with {proc.returncode}: {_tail(log)}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"proxy not listening on {port}: {_tail(log)}")


@contextlib.asynccontextmanager
async def running(args: list[str], port: int, log: Path) -> AsyncIterator[str]:
    """A proxy process in the foreground, listening on ``port``; always stopped. Yields its base URL."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        await _wait_port(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def nginx_conf(upstream: str, tmp: Path, port: int, extra_locations: str = "") -> str:
    """The page's upstream and location blocks inside a minimal nginx.conf of the test's own."""
    return f"""daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{doc_block("nginx-upstream").replace("127.0.0.1:8080", _addr(upstream))}
    server {{
        listen 127.0.0.1:{port};
{doc_block("nginx-location")}
{extra_locations}
    }}
}}
"""


@contextlib.asynccontextmanager
async def nginx(upstream: str, tmp: Path, extra_locations: str = "") -> AsyncIterator[str]:
    """nginx in front of ``upstream`` (the page's configuration); yields its base URL."""
    port = free_port()
    conf = _write(tmp, "nginx.conf", nginx_conf(upstream, tmp, port, extra_locations))
    args = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    async with running(args, port, tmp / "nginx.out") as url:
        yield url


def haproxy_conf(servers: Mapping[str, str], port: int, drop: tuple[str, ...] = ()) -> str:
    """The page's haproxy configuration, bound to ``port``, its servers at ``servers`` (name → URL);
    lines containing any of ``drop`` left out (to show what they do)."""
    text = doc_block("haproxy").replace("bind :8000", f"bind 127.0.0.1:{port}")
    for name, url in servers.items():
        text = re.sub(rf"(server {name}) \S+", rf"\1 {_addr(url)}", text)
    return "".join(line for line in text.splitlines(keepends=True) if not any(d in line for d in drop))


@contextlib.asynccontextmanager
async def haproxy(servers: Mapping[str, str], tmp: Path, drop: tuple[str, ...] = ()) -> AsyncIterator[str]:
    """haproxy in the foreground in front of ``servers`` (the page's configuration); its base URL."""
    port = free_port()
    conf = _write(tmp, "haproxy.cfg", haproxy_conf(servers, port, drop))
    async with running([HAPROXY, "-db", "-f", str(conf)], port, tmp / "haproxy.out") as url:
        yield url


@dataclass
class Frame:
    """One SSE event, and when it was read."""

    event: str
    id: str
    data: dict[str, Any]
    at: float


async def next_frame(resp: aiohttp.ClientResponse) -> Frame:
    """The next event of an SSE stream (comments skipped)."""
    fields: dict[str, str] = {}
    while True:
        line = (await resp.content.readline()).decode()
        if not line:
            raise EOFError("the stream ended")
        line = line.rstrip("\n")
        if line == "" and fields:
            return Frame(
                fields.get("event", ""), fields.get("id", ""), json.loads(fields["data"]), time.monotonic()
            )
        if line and not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


class Participants:
    """The saga's four participants as one in-process foreign server whose answers a test sets."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str], tuple[str, int]] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name, _, rest = request.path.strip("/").partition("/")
        workflow_id = rest.removeprefix("status/")
        if (name, workflow_id) not in self.parts:
            raise web.HTTPNotFound()
        state, version = self.parts[(name, workflow_id)]
        return web.json_response(status_body(workflow_id, state, version, participant=name))

    def set(self, name: str, workflow_id: str, state: str, version: int) -> None:
        self.parts[(name, workflow_id)] = (state, version)


@contextlib.asynccontextmanager
async def foreign_aggregator(**settings: Any) -> AsyncIterator[tuple[Participants, str]]:
    """An aggregator served on port 0 against in-process foreign participants (no broker)."""
    participants = Participants()
    async with foreign_server(participants.handle) as base:
        urls = {name: f"{base}/{name}" for name in ("order", "payment", "inventory", "shipping")}
        async with serve_aggregator(urls, **settings) as served:
            yield participants, served.url


async def _watch_latencies(
    proxied: str, direct: str, participants: Participants, wf: str, changes: int
) -> list[float]:
    """Open ``proxied``'s watch of ``wf``, then change a part ``changes`` times (each change read
    once at ``direct``, which wakes the stream); the seconds each change took to come through."""
    latencies = []
    async with aiohttp.ClientSession() as http, http.get(f"{proxied}/workflows/{wf}/watch") as stream:
        assert stream.status == 200
        first = await asyncio.wait_for(next_frame(stream), 5)
        assert first.data["parts"]["order"]["version"] == 1
        for version in range(1, changes + 1):
            participants.set("payment", wf, "AUTHORIZED", version)
            start = time.monotonic()
            async with http.get(f"{direct}/workflows/{wf}", headers={"Cache-Control": "no-cache"}) as r:
                assert (await r.json())["parts"]["payment"]["version"] == version
            frame = await asyncio.wait_for(next_frame(stream), 5)
            assert frame.data["parts"]["payment"]["version"] == version
            latencies.append(frame.at - start)
    return latencies


def _location(path: str, *, drop: str = "", add: str = "") -> str:
    """The page's location block mounted at ``path`` instead, a line removed and one added."""
    block = doc_block("nginx-location").replace("location /status/ {", f"location {path} {{\n        {add}")
    return "".join(line for line in block.splitlines(keepends=True) if not (drop and drop in line))


@needs_nginx
async def test_nginx_under_a_prefix_serves_views_and_revalidates_with_304(tmp_path: Path) -> None:
    """Through nginx at /status/: a view, its ETag, and If-None-Match answered 304 until a part changes."""
    async with foreign_aggregator() as (participants, direct), nginx(direct, tmp_path / "nginx") as proxy:
        participants.set("order", "px-1", "PENDING", 1)
        participants.set("payment", "px-1", "AUTHORIZED", 1)
        url = f"{proxy}/status/workflows/px-1"
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as r:
                assert r.status == 200
                assert r.headers["Server"].startswith("nginx")
                view = await r.json()
                etag = r.headers["ETag"]
            async with http.get(url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304
                assert r.headers["ETag"] == etag
                assert await r.read() == b""
            participants.set("payment", "px-1", "REFUNDED", 2)
            async with http.get(url, headers={"If-None-Match": etag}) as r:
                assert r.status == 200
                assert r.headers["ETag"] != etag
                changed = await r.json()
    assert view["workflow_id"] == "px-1"
    assert view["parts"]["order"]["state"] == "PENDING"
    assert changed["parts"]["payment"]["state"] == "REFUNDED"
    assert changed["parts"]["payment"]["version"] == 2


@needs_nginx
async def test_nginx_under_a_prefix_serves_the_status_page_and_its_relative_redirect(tmp_path: Path) -> None:
    """/status/ui redirects to /status/ui/, whose files and API calls resolve under the prefix."""
    async with foreign_aggregator() as (participants, direct), nginx(direct, tmp_path / "nginx") as proxy:
        participants.set("order", "px-ui", "PENDING", 1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{proxy}/status/ui", allow_redirects=False) as r:
                assert r.status == 302
                location = r.headers["Location"]
            page_url = urljoin(f"{proxy}/status/ui", location)
            async with http.get(page_url) as r:
                assert r.status == 200
                page = await r.text()
            files = re.findall(r'(?:href|src)="([^"]+)"', page)
            statuses, script = {}, ""
            for name in files:
                async with http.get(urljoin(page_url, name)) as r:
                    statuses[urlsplit(str(r.url)).path] = r.status
                    if name == "app.js":
                        script = await r.text()
            # app.js takes the API's base as new URL("..", the page): the prefix, not the host's root.
            api_base = urljoin(page_url, "..")
            async with http.get(urljoin(api_base, "workflows/px-ui")) as r:
                assert r.status == 200
                assert (await r.json())["workflow_id"] == "px-ui"
    assert location == "ui/"
    assert page_url == f"{proxy}/status/ui/"
    assert "<script" in page
    assert statuses == {"/status/ui/style.css": 200, "/status/ui/app.js": 200}
    assert 'new URL("..", document.baseURI)' in script
    assert api_base == f"{proxy}/status/"


@needs_nginx
async def test_nginx_passes_the_watch_stream_event_by_event(tmp_path: Path) -> None:
    """Each part change reaches a watcher through nginx within 500 ms, one event per change."""
    async with (
        foreign_aggregator(watch_poll_ms=60_000) as (participants, direct),
        nginx(direct, tmp_path / "nginx") as proxy,
    ):
        participants.set("order", "px-watch", "PENDING", 1)
        latencies = await _watch_latencies(f"{proxy}/status", direct, participants, "px-watch", 5)
    assert max(latencies) < 0.5, latencies


@needs_nginx
@pytest.mark.slow
async def test_nginx_buffering_is_turned_off_by_the_aggregators_header(tmp_path: Path) -> None:
    """X-Accel-Buffering: no (which nginx consumes) is what lets the stream through even on nginx's
    default HTTP/1.0 upstream; with the header ignored, nginx holds the stream in its buffer."""
    extra = _location("/http10/", drop="proxy_http_version") + _location(
        "/http10-ignoring/", drop="proxy_http_version", add="proxy_ignore_headers X-Accel-Buffering;"
    )
    async with (
        foreign_aggregator(watch_poll_ms=60_000) as (participants, direct),
        nginx(direct, tmp_path / "nginx", extra) as proxy,
        aiohttp.ClientSession() as http,
    ):
        participants.set("order", "px-buf", "PENDING", 1)
        async with http.get(f"{direct}/workflows/px-buf/watch") as r:
            sent = r.headers.get("X-Accel-Buffering")
        async with http.get(f"{proxy}/status/workflows/px-buf/watch") as r:
            passed_on = r.headers.get("X-Accel-Buffering")
            through_prefix = await asyncio.wait_for(next_frame(r), 2)
        async with http.get(f"{proxy}/http10/workflows/px-buf/watch") as r:
            through_http10 = await asyncio.wait_for(next_frame(r), 2)
        held = False
        try:
            async with asyncio.timeout(1):
                async with http.get(f"{proxy}/http10-ignoring/workflows/px-buf/watch") as r:
                    await next_frame(r)
        except TimeoutError:
            held = True  # neither the head nor the first view left nginx's buffer within a second
    assert sent == "no"
    assert passed_on is None  # nginx reads the header and does not pass it on
    assert through_prefix.data["parts"]["order"]["version"] == 1
    assert through_http10.event == "view"
    assert held


@needs_haproxy
async def test_haproxy_passes_watch_events_promptly(tmp_path: Path) -> None:
    """Through haproxy (option http-no-delay) each change arrives within 100 ms, headers intact."""
    async with (
        foreign_aggregator(watch_poll_ms=60_000) as (participants, direct),
        haproxy({"agg1": direct, "agg2": direct}, tmp_path / "haproxy") as proxy,
        aiohttp.ClientSession() as http,
    ):
        participants.set("order", "px-ha", "PENDING", 1)
        async with http.get(f"{proxy}/workflows/px-ha/watch") as r:
            headers = r.headers.copy()
        latencies = await _watch_latencies(proxy, direct, participants, "px-ha", 5)
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["X-Accel-Buffering"] == "no"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Backend"] in {"agg1", "agg2"}
    assert max(latencies) < 0.1, latencies


def _short_timeouts(text: str) -> str:
    return text.replace("timeout client 60s", "timeout client 1s").replace(
        "timeout server 60s", "timeout server 1s"
    )


@needs_haproxy
@pytest.mark.slow
async def test_haproxy_keeps_a_stream_open_by_its_heartbeat_not_by_timeout_tunnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With haproxy's client/server timeouts at 1 s, a 250 ms heartbeat keeps a quiet stream open
    for 2 s; a 5 s heartbeat does not, even with ``timeout tunnel 1h`` (which SSE never uses)."""
    page = doc_block
    monkeypatch.setattr(
        f"{__name__}.doc_block",
        lambda name: _short_timeouts(page(name)).replace("defaults\n", "defaults\n    timeout tunnel 1h\n"),
    )

    async def quiet_stream(heartbeat_ms: int) -> tuple[int, float | None]:
        """Pings read within 2 s, and when the stream was cut (None: it was not)."""
        async with (
            foreign_aggregator(watch_poll_ms=60_000, watch_heartbeat_ms=heartbeat_ms) as (_, direct),
            haproxy({"agg1": direct, "agg2": direct}, tmp_path / f"haproxy-{heartbeat_ms}") as proxy,
            aiohttp.ClientSession() as http,
        ):
            start, pings = time.monotonic(), 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2), http.get(f"{proxy}/workflows/px-quiet/watch") as r:
                    while True:
                        try:
                            line = await r.content.readline()
                        except aiohttp.ClientPayloadError:
                            line = b""
                        if not line:
                            return pings, time.monotonic() - start
                        pings += line == b": ping\n"
            return pings, None

    # Nothing is known of the workflow yet: no view, only pings, so the stream is quiet.
    kept_pings, kept_cut = await quiet_stream(250)
    lost_pings, lost_cut = await quiet_stream(5000)
    assert kept_cut is None and kept_pings >= 6
    assert lost_pings == 0 and lost_cut is not None and 0.8 < lost_cut < 1.6


@dataclass
class Read:
    """One read through the proxy: which replica served it, and the part versions it showed."""

    backend: str
    status: int
    versions: dict[str, int | None]
    state: str | None = None


async def _read(http: aiohttp.ClientSession, url: str) -> Read:
    async with http.get(url) as r:
        body = await r.json() if r.status == 200 else {}
        versions = {name: part["version"] for name, part in body.get("parts", {}).items()}
        return Read(r.headers["X-Backend"], r.status, versions, body.get("state"))


def _regressions(reads: list[Read]) -> list[tuple[str, int, int]]:
    """Each (participant, before, after) where a later read showed an earlier version."""
    seen: dict[str, int] = {}
    found = []
    for read in reads:
        for name, version in read.versions.items():
            if version is not None and version < seen.get(name, 0):
                found.append((name, seen[name], version))
            seen[name] = max(seen.get(name, 0), version or 0)
    return found


@needs_haproxy
@pytest.mark.slow
async def test_replicas_behind_haproxy_serve_each_workflow_from_one_replica(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Two events-mode replicas behind ``balance uri depth 2``: every read of a workflow (view,
    ``?min_version``, timeline) lands on one replica, both replicas serve, and no part goes back,
    while the sagas run."""
    placed = {f"px-rep-{i}": OUTCOMES[i % len(OUTCOMES)] for i in range(16)}
    async with (
        events_aggregator(saga, session_broker, prefix) as agg1,
        events_aggregator(saga, session_broker, prefix) as agg2,
        serve_app(create_app(agg1)) as url1,
        serve_app(create_app(agg2)) as url2,
        haproxy({"agg1": url1, "agg2": url2}, tmp_path / "haproxy") as proxy,
        aiohttp.ClientSession() as http,
    ):
        reads: dict[str, list[Read]] = {wf: [] for wf in placed}
        routes: dict[str, set[str]] = {wf: set() for wf in placed}

        async def place_all() -> None:
            for wf, outcome in placed.items():
                await saga.place(outcome, order_id=wf)
                await asyncio.sleep(0.02)

        async def follow(wf: str) -> None:
            """Read ``wf`` over and over (a view, one asking ``min_version``, its timeline) until it ends."""
            while not reads[wf] or reads[wf][-1].state != SAMPLES[placed[wf]].state:
                for query in ("", "?min_version=order:1"):
                    read = await _read(http, f"{proxy}/workflows/{wf}{query}")
                    reads[wf].append(read)
                    routes[wf].add(read.backend)
                async with http.get(f"{proxy}/workflows/{wf}/timeline") as r:
                    routes[wf].add(r.headers["X-Backend"])

        await asyncio.wait_for(asyncio.gather(place_all(), *(follow(wf) for wf in placed)), 20)
        for wf in placed:
            async with http.get(f"{proxy}/workflows/{wf}/watch") as r:
                routes[wf].add(r.headers["X-Backend"])
        served = {
            name: sum(agg.metrics.value("aggregator_views_total", status=s) for s in ("200", "304", "404"))
            for name, agg in (("agg1", agg1), ("agg2", agg2))
        }
    routed = {name: sum(r.backend == name for rs in reads.values() for r in rs) for name in ("agg1", "agg2")}
    assert {wf: len(r) for wf, r in routes.items()} == dict.fromkeys(placed, 1), routes
    assert {b for r in routes.values() for b in r} == {"agg1", "agg2"}
    assert served == routed  # each replica counted exactly the views haproxy sent it
    assert {wf: _regressions(rs) for wf, rs in reads.items()} == {wf: [] for wf in placed}
    # The reads overlapped the changes: most workflows were seen at two or more sets of versions.
    moving = [wf for wf, rs in reads.items() if len({tuple(sorted(r.versions.items())) for r in rs}) >= 2]
    assert len(moving) >= len(placed) // 2, moving


@needs_haproxy
async def test_round_robin_replicas_can_take_a_workflow_back_where_uri_hashing_does_not(
    tmp_path: Path,
) -> None:
    """Two ttl-mode replicas, one holding an older copy: round robin shows a part going back;
    the page's ``balance uri`` keeps every read of the workflow on one replica, so it never does."""
    participants = Participants()
    async with foreign_server(participants.handle) as base:
        urls = {name: f"{base}/{name}" for name in ("order", "payment", "inventory", "shipping")}
        async with (
            serve_aggregator(urls, freshness="ttl", ttl_ms=60_000) as one,
            serve_aggregator(urls, freshness="ttl", ttl_ms=60_000) as two,
            aiohttp.ClientSession() as http,
        ):
            participants.set("order", "px-rr", "PENDING", 1)
            participants.set("payment", "px-rr", "AUTHORIZED", 1)
            async with http.get(f"{two.url}/workflows/px-rr") as r:  # replica 2 keeps version 1
                assert (await r.json())["parts"]["payment"]["version"] == 1
            participants.set("payment", "px-rr", "REFUNDED", 2)
            async with http.get(f"{one.url}/workflows/px-rr") as r:  # replica 1 learns version 2
                assert (await r.json())["parts"]["payment"]["version"] == 2
            servers = {"agg1": one.url, "agg2": two.url}
            by_policy = {}
            for policy, drop in (("uri", ()), ("roundrobin", ("balance uri", "hash-type"))):
                async with haproxy(servers, tmp_path / policy, drop) as proxy:
                    by_policy[policy] = [await _read(http, f"{proxy}/workflows/px-rr") for _ in range(6)]
    assert len({r.backend for r in by_policy["uri"]}) == 1
    assert _regressions(by_policy["uri"]) == []
    assert {r.backend for r in by_policy["roundrobin"]} == {"agg1", "agg2"}
    assert ("payment", 2, 1) in _regressions(by_policy["roundrobin"])
