"""One HTTP contract, two servers: the aiohttp application (``aggregator.web``) and the ASGI one
(``aggregator.asgi``, mounted by ``examples/fastapi_gateway.py`` and served by uvicorn).

Both serve an aggregator of the packaged definition against the same four in-process fake
participants (``foreign_server``s holding status records the test sets), on port 0. The tests
parametrised over ``kind`` hold each server to the contract; ``test_both_servers_*`` send both
the same requests and compare the answers. The tests at the end cover what only the ASGI side
has: the FastAPI gateway example, its lifespan, its stop and its status page in Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import web

from aggregator import Aggregator, _scans, load_definition
from aggregator.web import create_app as aiohttp_app
from contract import serve_app
from order_saga.broker import free_port

from ..support import fastapi_gateway_example, foreign_server, run_python, until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_gateway.py"
KINDS = ("aiohttp", "asgi")
PREFIX = "/status"
PARTICIPANTS = ("order", "payment", "inventory", "shipping")
LONG_AGO = "2026-11-25T12:00:00.000000Z"
#: Settings every served aggregator gets: no breaker opening and no hedging midway through a
#: test (answers must depend on the requests only), watches re-read often.
SETTINGS: dict[str, Any] = {"breaker_failures": 1000, "hedge": False, "watch_poll_ms": 100}
#: The headers of an answer both servers must send alike (besides the content type).
COMPARED_HEADERS = (
    "ETag", "Cache-Control", "WWW-Authenticate", "Location", "Retry-After",
    "Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Accel-Buffering",
)  # fmt: skip
#: View and health fields that depend on when and how fast a request was answered.
TIMED = frozenset({"generated_at", "observed_at", "latency_ms", "staleness_ms", "pid"})


# -- fake participants ----------------------------------------------------------------------


@dataclass
class Participants:
    """Four participants speaking the contract (§4) from records the test sets; ``failing``
    workflows answer 503, ``republished`` records the redrive calls; ``listings`` counts the
    listing requests, each of which waits for ``hold`` while it is set to an unset event."""

    urls: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {n: {} for n in PARTICIPANTS}
    )
    failing: dict[str, set[str]] = field(default_factory=lambda: {n: set() for n in PARTICIPANTS})
    republished: list[tuple[str, str]] = field(default_factory=list)
    listings: int = 0
    hold: asyncio.Event | None = None

    def set(self, name: str, workflow_id: str, state: str, version: int = 1, at: str = LONG_AGO) -> None:
        """``name``'s part of ``workflow_id`` is now ``state`` at ``version`` (history up to it)."""
        history = [{"state": state, "version": v, "at": at} for v in range(1, version + 1)]
        self.records[name][workflow_id] = {
            "participant": name, "workflow_id": workflow_id, "state": state, "version": version,
            "updated_at": at, "history": history, "data": {},
        }  # fmt: skip

    def handler(self, name: str) -> Any:
        records, failing = self.records[name], self.failing[name]

        async def handle(request: web.Request) -> web.StreamResponse:
            path = request.path
            if request.method == "POST" and path.startswith("/outbox/"):
                workflow_id = path.split("/")[2]
                self.republished.append((name, workflow_id))
                return web.json_response({"republished": 1 if workflow_id in records else 0}, status=202)
            if path.startswith("/status/"):
                workflow_id = path.removeprefix("/status/")
                if workflow_id in failing:
                    return web.json_response({"status": 503, "detail": "down"}, status=503)
                if workflow_id not in records:
                    return web.json_response({"status": 404, "detail": "no record"}, status=404)
                return web.json_response(records[workflow_id])
            if path == "/status" and "workflow_id" in request.query:  # batch
                ids = request.query.getall("workflow_id")
                return web.json_response(
                    {
                        "statuses": [records[w] for w in ids if w in records],
                        "missing": [w for w in ids if w not in records],
                    }
                )
            if path == "/status":  # the listing of workflows in some states
                self.listings += 1
                if self.hold is not None:
                    await self.hold.wait()
                states = set(request.query.getall("state", []))
                found = [r for r in records.values() if not states or r["state"] in states]
                return web.json_response({"statuses": found, "next": None})
            return web.json_response({"status": 404, "detail": "no such route"}, status=404)

        return handle


@pytest.fixture
async def participants() -> AsyncIterator[Participants]:
    """The four fake participants, with the workflows the tests read:
    ``wf-1`` in progress (shipping has no record), ``wf-done`` completed, ``wf-down`` with
    payment failing, ``wf-dead`` with every participant failing."""
    fakes = Participants()
    for name, state in (("order", "PENDING"), ("payment", "AUTHORIZED"), ("inventory", "RESERVED")):
        fakes.set(name, "wf-1", state)
        fakes.set(name, "wf-down", state)
    for name, state in (("payment", "AUTHORIZED"), ("inventory", "RESERVED"), ("shipping", "SCHEDULED")):
        fakes.set(name, "wf-done", state)
    fakes.set("order", "wf-done", "CONFIRMED", 2)
    fakes.failing["payment"].add("wf-down")
    for name in PARTICIPANTS:
        fakes.failing[name].add("wf-dead")
    async with contextlib.AsyncExitStack() as stack:
        for name in PARTICIPANTS:
            fakes.urls[name] = await stack.enter_async_context(foreign_server(fakes.handler(name)))
        yield fakes


# -- the two servers ------------------------------------------------------------------------


@dataclass
class Served:
    """An aggregator served by one kind of server: its base URL (the mount prefix included)."""

    kind: str
    url: str
    agg: Aggregator


def in_process_server(module: Any) -> type[uvicorn.Server]:
    """The example's ``GatewayServer``, run in the test's event loop: the signal handlers stay pytest's."""

    class InProcess(module.GatewayServer):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return InProcess


@contextlib.asynccontextmanager
async def serve_with_uvicorn(gateway: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """``gateway`` (from ``build_gateway``) served by uvicorn on port 0; stopped as a signal
    would stop it (the example's ``handle_exit``), then forced if that takes over 10 s."""
    module = fastapi_gateway_example()
    config = uvicorn.Config(
        gateway, host="127.0.0.1", port=0, http="httptools", lifespan=lifespan, log_level="warning"
    )
    server = in_process_server(module)(config, gateway)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn stopped while starting"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.handle_exit(signal.SIGTERM, None)
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(task)
        except TimeoutError:
            server.force_exit = True
            await task


@contextlib.asynccontextmanager
async def serve(
    kind: str,
    fakes: Participants,
    *,
    token: str | None = None,
    opened: bool = True,
    timeout_ms: int | None = None,
    **settings: Any,
) -> AsyncIterator[Served]:
    """The packaged definition over ``fakes``, served by ``kind`` under ``PREFIX``; the
    aggregator is opened only if ``opened``; ``timeout_ms`` replaces every participant's."""
    definition = load_definition().with_urls(fakes.urls).with_settings(**{**SETTINGS, **settings})
    if timeout_ms is not None:
        parts = {
            n: p.model_copy(update={"timeout_ms": timeout_ms}) for n, p in definition.participants.items()
        }
        definition = definition.model_copy(update={"participants": parts})
    if kind == "aiohttp":
        agg = Aggregator(definition)
        root = web.Application()
        root.add_subapp(PREFIX, aiohttp_app(agg, token=token))
        async with contextlib.AsyncExitStack() as stack:
            if opened:
                await stack.enter_async_context(agg)
            base = await stack.enter_async_context(serve_app(root))
            yield Served(kind, base + PREFIX, agg)
    else:
        gateway = fastapi_gateway_example().build_gateway(definition, prefix=PREFIX, token=token)
        async with serve_with_uvicorn(gateway, lifespan="on" if opened else "off") as base:
            yield Served(kind, base + PREFIX, gateway.state.aggregator)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which server a test holds to the contract: the aiohttp app, or the ASGI app under uvicorn."""
    return str(request.param)


@pytest.fixture
async def served(kind: str, participants: Participants) -> AsyncIterator[Served]:
    """The aggregator over the fake participants, served by ``kind``, open."""
    async with serve(kind, participants) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for the test's requests."""
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass(frozen=True)
class Reply:
    """What a server answered, as the comparisons see it."""

    status: int
    content_type: str | None
    headers: dict[str, str]
    allow: frozenset[str] | None
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def ask(
    http: aiohttp.ClientSession,
    url: str,
    method: str = "GET",
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
) -> Reply:
    """One request, no redirects followed; the answer read whole."""
    async with http.request(method, url, headers=headers, allow_redirects=False) as r:
        body = await r.read()
        allow = r.headers.get("Allow")
        return Reply(
            r.status,
            r.headers.get("Content-Type"),
            {name: r.headers[name] for name in COMPARED_HEADERS if name in r.headers},
            None if allow is None else frozenset(m.strip() for m in allow.split(",")),
            body,
        )


def masked(value: Any) -> Any:
    """A JSON body with the values that depend on timing replaced by ``"*"``."""
    if isinstance(value, dict):
        return {k: "*" if k in TIMED else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def comparable(reply: Reply) -> tuple[Any, ...]:
    """What must be identical between the two servers' answers to one request."""
    kind = (reply.content_type or "").split(";")[0]
    if kind.endswith("json") and reply.body:
        body: Any = masked(reply.json())
    elif kind == "text/plain":  # metrics: the same series (their values are compared where they must agree)
        body = sorted(line for line in reply.body.decode().splitlines() if line.startswith("# TYPE"))
    else:
        body = reply.body
    return (reply.status, reply.content_type, reply.headers, reply.allow, body)


def is_problem(reply: Reply, status: int) -> dict[str, Any]:
    """Assert ``reply`` is a problem+json of ``status``; its body."""
    assert (reply.status, reply.content_type) == (status, "application/problem+json"), (reply, reply.body)
    body: dict[str, Any] = reply.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- the contract, held against each server --------------------------------------------------


async def test_view_is_200_with_etag_and_cache_control_and_304_when_it_matches(
    served: Served, http: aiohttp.ClientSession
) -> None:
    """A view: 200 JSON of the contract's shape with ETag and Cache-Control; If-None-Match → 304."""
    reply = await ask(http, f"{served.url}/workflows/wf-1")
    assert (reply.status, reply.content_type) == (200, "application/json")
    view = reply.json()
    assert set(view) == {
        "workflow_id", "workflow", "state", "step", "complete", "parts", "staleness_ms", "anomalies",
        "generated_at", "stalled", "stall",
    }  # fmt: skip
    assert (view["workflow_id"], view["state"], view["step"], view["complete"]) == (
        "wf-1",
        "IN_PROGRESS",
        "shipping",
        True,
    )
    assert {n: (p["state"], p["version"], p["source"], p["error"]) for n, p in view["parts"].items()} == {
        "order": ("PENDING", 1, "live", None),
        "payment": ("AUTHORIZED", 1, "live", None),
        "inventory": ("RESERVED", 1, "live", None),
        "shipping": (None, None, "live", None),
    }
    etag = reply.headers["ETag"]
    assert etag.startswith('"') and reply.headers["Cache-Control"] == "private, no-cache"
    for matching in (etag, f'"other", W/{etag}', "*"):
        not_modified = await ask(http, f"{served.url}/workflows/wf-1", headers={"If-None-Match": matching})
        assert (not_modified.status, not_modified.body) == (304, b"")
        assert not_modified.headers["ETag"] == etag
    changed = await ask(http, f"{served.url}/workflows/wf-1", headers={"If-None-Match": '"other"'})
    assert changed.status == 200 and changed.headers["ETag"] == etag


async def test_unknown_workflow_is_404_and_a_bad_id_400(served: Served, http: aiohttp.ClientSession) -> None:
    """Every participant without a record: 404 problem naming the workflow; an id outside the rule: 400 problem."""
    assert is_problem(await ask(http, f"{served.url}/workflows/nobody"), 404)["workflow_id"] == "nobody"
    for bad in ("bad%20id", "x" * 129, "a%3Fb", "%FF"):
        assert "id" in is_problem(await ask(http, f"{served.url}/workflows/{bad}"), 400)["detail"]


async def test_a_participant_down_is_a_200_with_its_error_and_nobody_answering_a_503(
    served: Served, http: aiohttp.ClientSession
) -> None:
    """One part failing: 200 with complete false and that part's error; all failing: 503 problem with each error."""
    reply = await ask(http, f"{served.url}/workflows/wf-down")
    assert reply.status == 200
    view = reply.json()
    assert view["complete"] is False
    assert (view["parts"]["payment"]["state"], view["parts"]["payment"]["error"]) == (None, "unavailable")
    assert {n: p["error"] for n, p in view["parts"].items() if n != "payment"} == dict.fromkeys(
        ("order", "inventory", "shipping")
    )
    dead = is_problem(await ask(http, f"{served.url}/workflows/wf-dead"), 503)
    assert dead["errors"] == dict.fromkeys(PARTICIPANTS, "unavailable")


@pytest.mark.parametrize(
    ("query", "headers", "needle"),
    [
        ("?timeout_ms=abc", {}, "timeout_ms"),
        ("?timeout_ms=0", {}, "timeout_ms"),
        ("?timeout_ms=9999999", {}, "timeout_ms"),
        ("?min_version=payment", {}, "min_version"),
        ("?min_version=nobody:2", {}, "min_version"),
        ("?min_version=payment:-1", {}, "min_version"),
        ("", {"Cache-Control": "max-age=soon"}, "max-age"),
    ],
)
async def test_bad_read_options_are_400_saying_which(
    served: Served, http: aiohttp.ClientSession, query: str, headers: dict[str, str], needle: str
) -> None:
    """A malformed timeout_ms, min_version or Cache-Control max-age: 400 problem naming it."""
    assert (
        needle
        in is_problem(await ask(http, f"{served.url}/workflows/wf-1{query}", headers=headers), 400)["detail"]
    )


@pytest.mark.slow
async def test_read_options_are_honoured(
    kind: str, participants: Participants, http: aiohttp.ClientSession
) -> None:
    """max-age takes cached parts, max-age=0/no-cache refetch; min_version waits within timeout_ms, or says it was unmet."""
    async with serve(kind, participants, freshness="ttl", ttl_ms=60_000) as served:
        url = f"{served.url}/workflows/wf-1"

        async def sources(headers: dict[str, str] | None = None, query: str = "") -> set[str]:
            reply = await ask(http, url + query, headers=headers)
            assert reply.status == 200, reply.body
            return {p["source"] for p in reply.json()["parts"].values()}

        assert await sources() == {"live"}
        assert await sources({"Cache-Control": "max-age=60"}) == {"cache"}
        assert await sources({"Cache-Control": "max-age=0"}) == {"live"}
        assert await sources({"Cache-Control": "no-cache"}) == {"live"}

        started = time.monotonic()
        unmet = (await ask(http, f"{url}?min_version=payment:2&timeout_ms=300")).json()
        assert 0.25 < time.monotonic() - started < 2.0
        assert unmet["parts"]["payment"]["version"] == 1 and "payment" in json.dumps(
            unmet["min_version_unmet"]
        )

        async def bump() -> None:
            await asyncio.sleep(0.2)
            participants.set("payment", "wf-1", "AUTHORIZED", 2)

        waited, _ = await asyncio.gather(ask(http, f"{url}?min_version=payment:2&timeout_ms=1500"), bump())
        assert waited.json()["parts"]["payment"]["version"] == 2
        assert "min_version_unmet" not in waited.json()


async def test_batch_returns_views_and_not_found_and_refuses_bad_queries(
    served: Served, http: aiohttp.ClientSession
) -> None:
    """GET /workflows?id=a&id=b: views in order and not_found; no id, over 100 ids, an unknown parameter: 400."""
    reply = await ask(http, f"{served.url}/workflows?id=wf-done&id=nobody&id=wf-1")
    assert (reply.status, reply.headers["Cache-Control"]) == (200, "private, no-cache")
    body = reply.json()
    assert [(v["workflow_id"], v["state"]) for v in body["views"]] == [
        ("wf-done", "COMPLETED"),
        ("wf-1", "IN_PROGRESS"),
    ]
    assert body["not_found"] == ["nobody"]
    too_many = "&".join(f"id=w{i}" for i in range(101))
    for query, needle in (("", "at least one id"), (too_many, "at most 100"), ("id=a&ids=b", "'ids'")):
        assert needle in is_problem(await ask(http, f"{served.url}/workflows?{query}"), 400)["detail"]


async def test_stalled_list_holds_the_workflows_that_stopped_short(
    served: Served, http: aiohttp.ClientSession
) -> None:
    """?stalled=true lists the non-terminal workflows untouched past stall_after_ms (not the completed one)."""
    reply = await ask(http, f"{served.url}/workflows?stalled=true")
    assert (reply.status, reply.headers["Cache-Control"]) == (200, "no-store")
    views = reply.json()["views"]
    assert sorted(v["workflow_id"] for v in views) == ["wf-1", "wf-down"]
    assert all(v["stalled"] for v in views)
    for query in ("stalled=true&id=wf-1", "stalled=yes", "stalled=true&limit=0"):
        is_problem(await ask(http, f"{served.url}/workflows?{query}"), 400)


async def test_fleet_query_and_summary_list_and_count_the_in_flight_workflows(
    served: Served, http: aiohttp.ClientSession
) -> None:
    """?state=IN_PROGRESS: a page of the in-flight workflows in that state, with no next page;
    /summary counts them, complete; bad parameters are 400 problems; /workflows/summary is a view."""
    reply = await ask(http, f"{served.url}/workflows?state=IN_PROGRESS&limit=10")
    assert (reply.status, reply.headers["Cache-Control"]) == (200, "no-store")
    page = reply.json()
    assert [v["workflow_id"] for v in page["views"]] == ["wf-1", "wf-down"]
    assert (page["next"], page["scanned"], page["budget_exhausted"]) == (None, 2, False)
    assert all(v["stall"]["reason"] in ("no_progress", "part_unavailable") for v in page["views"])
    summary = await ask(http, f"{served.url}/summary")
    assert summary.status == 200
    assert summary.json()["counts"]["IN_PROGRESS"] == 2 and summary.json()["complete"] is True
    for query in (
        "state=NOPE",
        "state=IN_PROGRESS&cursor=bad",
        "state=IN_PROGRESS&limit=1001",
        "state=IN_PROGRESS&id=wf-1",
    ):
        is_problem(await ask(http, f"{served.url}/workflows?{query}"), 400)
    is_problem(await ask(http, f"{served.url}/summary?updated_after=soon"), 400)
    assert is_problem(await ask(http, f"{served.url}/workflows/summary"), 404)["workflow_id"] == "summary"


async def test_summaries_and_fleet_pages_run_a_few_at_once_and_past_that_are_429(
    kind: str, participants: Participants, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the initiator's listing held, 2 summaries and 4 fleet pages run; a third summary, a
    fifth page and a stalled list wait (0.5 s here) and are 429 problems whose Retry-After is
    within their time budget, while a request with bad parameters is still a 400 and a view is
    served. One that waits while the listing is let go is served, as is every one that ran."""
    monkeypatch.setattr(_scans, "WAIT_S", 0.5)
    async with serve(kind, participants, timeout_ms=30_000) as served:
        participants.hold = asyncio.Event()
        url = served.url
        running = [asyncio.create_task(ask(http, f"{url}/summary")) for _ in range(_scans.MAX_SUMMARIES)]
        running += [
            asyncio.create_task(ask(http, f"{url}/workflows?state=IN_PROGRESS"))
            for _ in range(_scans.MAX_PAGES)
        ]
        try:
            await until(lambda: participants.listings == len(running))
            async with asyncio.timeout(10):  # unbound, they would wait for the listing
                summary, page, stalled, bad_summary, bad_page, view = await asyncio.gather(
                    ask(http, f"{url}/summary"),
                    ask(http, f"{url}/workflows?state=FAILED&limit=5"),
                    ask(http, f"{url}/workflows?stalled=true"),  # a stalled list takes a page's slot
                    ask(http, f"{url}/summary?updated_after=soon"),
                    ask(http, f"{url}/workflows?state=NOPE"),
                    ask(http, f"{url}/workflows/wf-1"),
                )
            assert "2 summaries are running" in is_problem(summary, 429)["detail"]
            assert 1 <= int(summary.headers["Retry-After"]) <= 10
            assert "4 fleet pages or stalled lists are running" in is_problem(page, 429)["detail"]
            assert 1 <= int(page.headers["Retry-After"]) <= 5
            assert "4 fleet pages or stalled lists are running" in is_problem(stalled, 429)["detail"]
            is_problem(bad_summary, 400)
            is_problem(bad_page, 400)
            assert view.status == 200
            assert participants.listings == len(running)  # the refused ones asked nothing
            waiting = asyncio.create_task(ask(http, f"{url}/summary"))
            await asyncio.sleep(0.05)
        finally:
            participants.hold.set()
        assert (await waiting).status == 200
        assert [r.status for r in await asyncio.gather(*running)] == [200] * len(running)
        assert (await ask(http, f"{url}/summary")).status == 200


async def test_timeline_and_redrive(
    served: Served, http: aiohttp.ClientSession, participants: Participants
) -> None:
    """/timeline merges the histories; POST /redrive is 202 and asks every participant to republish."""
    participants.set("order", "wf-done", "CONFIRMED", 2)
    reply = await ask(http, f"{served.url}/workflows/wf-done/timeline")
    assert reply.status == 200
    entries = reply.json()["entries"]
    assert sorted((e["participant"], e["version"]) for e in entries) == [
        ("inventory", 1), ("order", 1), ("order", 2), ("payment", 1), ("shipping", 1),
    ]  # fmt: skip
    is_problem(await ask(http, f"{served.url}/workflows/nobody/timeline"), 404)
    redrive = await ask(http, f"{served.url}/workflows/wf-1/redrive", "POST")
    assert redrive.status == 202
    assert set(redrive.json()["participants"]) == set(PARTICIPANTS)
    assert sorted(participants.republished) == sorted((n, "wf-1") for n in PARTICIPANTS)


async def post_json(http: aiohttp.ClientSession, url: str, body: Any, headers: Any = None) -> Reply:
    """POST ``body`` (bytes as they are, anything else as JSON); the answer as :func:`ask` reads it."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    async with http.post(url, data=data, headers=hdrs, allow_redirects=False) as r:
        raw = await r.read()
        return Reply(
            r.status,
            r.headers.get("Content-Type"),
            {name: r.headers[name] for name in COMPARED_HEADERS if name in r.headers},
            None,
            raw,
        )


async def finished_job(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The job at ``url`` once it is no longer running (within 5 s)."""
    async with asyncio.timeout(5):
        while True:
            job: dict[str, Any] = (await ask(http, url)).json()
            if job["state"] != "running":
                return job
            await asyncio.sleep(0.02)


#: Bodies POST /redrives refuses with a 400 problem.
HOSTILE_JOBS: list[bytes | Any] = [
    b"", b"not json", b"[1, 2]", b"null", b'{"filter": {"stalled": true}', b"\xff\xfe",
    b'{"filter": ' * 5000, {}, {"filter": {"stalled": True}, "ids": ["wf-1"]},
    {"filter": {"stalled": False}}, {"filter": {"stalled": True, "state": "FAILED"}},
    {"filter": {"nope": 1}}, {"filter": {"state": "NOPE"}}, {"filter": {"state": 1}},
    {"filter": {"state": "IN_PROGRESS", "limit": 5}}, {"filter": {"state": "IN_PROGRESS", "cursor": "x"}},
    {"filter": {"state": "IN_PROGRESS", "updated_before": "soon"}}, {"filter": []}, {"filter": {}},
    {"ids": []}, {"ids": "wf-1"}, {"ids": [1]}, {"ids": ["bad id"]}, {"ids": [f"w{i}" for i in range(1001)]},
    {"ids": ["wf-1"], "rate_per_s": -1}, {"ids": ["wf-1"], "rate_per_s": 0},
    {"ids": ["wf-1"], "rate_per_s": 501}, {"ids": ["wf-1"], "rate_per_s": "fast"},
    {"ids": ["wf-1"], "rate_per_s": True}, {"ids": ["wf-1"], "max": 0}, {"ids": ["wf-1"], "max": 1.5},
    {"ids": ["wf-1"], "max": 10001}, {"ids": ["wf-1"], "dry_run": "yes"}, {"ids": ["wf-1"], "extra": 1},
]  # fmt: skip


async def test_redrive_jobs_select_redrive_list_and_cancel(
    served: Served, http: aiohttp.ClientSession, participants: Participants
) -> None:
    """POST /redrives: 202 with id, cutoff and Location; a dry run selects without republishing; a
    job redrives each selected workflow (every participant once) and reports each result; ids
    given that nobody knows are skipped; GET /redrives lists them newest first; DELETE of a
    finished job leaves it done; an unknown job is a 404; hostile bodies are 400 problems."""
    base = f"{served.url}/redrives"
    dry = await post_json(http, base, {"filter": {"stalled": True}, "dry_run": True})
    assert dry.status == 202, dry.body
    started = dry.json()
    assert set(started) == {"id", "cutoff", "state"} and started["cutoff"].endswith("Z")
    assert dry.headers["Location"] == f"redrives/{started['id']}"
    job = await finished_job(http, f"{base}/{started['id']}")
    assert (job["state"], job["selected"], job["done"], job["failed"], job["dry_run"]) == (
        "done",
        2,
        2,
        0,
        True,
    )
    assert sorted((r["workflow_id"], r["result"]) for r in job["results"]) == [
        ("wf-1", "selected"), ("wf-down", "selected"),
    ]  # fmt: skip
    assert participants.republished == []

    real = await post_json(http, base, {"filter": {"state": "IN_PROGRESS"}, "rate_per_s": 100})
    assert real.status == 202
    job = await finished_job(http, f"{base}/{real.json()['id']}")
    assert (job["state"], job["selected"], job["done"], job["failed"]) == ("done", 2, 2, 0)
    assert {r["workflow_id"]: r["result"] for r in job["results"]} == {
        "wf-1": "republished", "wf-down": "republished",
    }  # fmt: skip
    assert sorted(participants.republished) == sorted(
        (n, w) for n in PARTICIPANTS for w in ("wf-1", "wf-down")
    )

    by_ids = await post_json(http, base, {"ids": ["wf-1", "nobody", "wf-1"], "max": 5})
    job = await finished_job(http, f"{base}/{by_ids.json()['id']}")
    assert (job["selected"], job["skipped"], job["ids"]) == (1, 1, 2)
    assert [r["workflow_id"] for r in job["results"]] == ["wf-1"]

    listed = (await ask(http, base)).json()["jobs"]
    assert [j["id"] for j in listed[:3]] == [by_ids.json()["id"], real.json()["id"], started["id"]]
    assert all("results" not in j for j in listed)
    cancelled = await ask(http, f"{base}/{started['id']}", "DELETE")
    assert (cancelled.status, cancelled.json()["state"]) == (202, "done")
    is_problem(await ask(http, f"{base}/nothing"), 404)
    is_problem(await ask(http, f"{base}/nothing", "DELETE"), 404)
    is_problem(await ask(http, f"{base}?x=1"), 400)
    for body in HOSTILE_JOBS:
        is_problem(await post_json(http, base, body), 400)


async def test_health_readiness_metrics_and_openapi(served: Served, http: aiohttp.ClientSession) -> None:
    """/healthz and /readyz 200 (participants ``unknown`` until asked, then ``ok``), /metrics Prometheus
    text counting the views served, /openapi.json 3.1."""
    assert (await ask(http, f"{served.url}/healthz")).json()["status"] == "ok"
    ready = await ask(http, f"{served.url}/readyz")
    assert ready.status == 200 and ready.json()["participants"] == dict.fromkeys(PARTICIPANTS, "unknown")
    assert ready.json()["status"] == "ready"  # nothing asked yet: nothing known to be wrong
    await ask(http, f"{served.url}/workflows/wf-1")
    ready = await ask(http, f"{served.url}/readyz")
    assert ready.json()["participants"] == dict.fromkeys(PARTICIPANTS, "ok")
    await ask(http, f"{served.url}/workflows/nobody")
    metrics = await ask(http, f"{served.url}/metrics")
    assert metrics.content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = metrics.body.decode()
    assert 'aggregator_views_total{status="200"} 1.0' in text
    assert 'aggregator_views_total{status="404"} 1.0' in text
    doc = (await ask(http, f"{served.url}/openapi.json")).json()
    assert doc["openapi"].startswith("3.1") and "/workflows/{workflow_id}" in doc["paths"]


async def test_readyz_is_503_until_the_aggregator_is_open(
    kind: str, participants: Participants, http: aiohttp.ClientSession
) -> None:
    """Served before the aggregator is opened: /readyz and reads answer 503 problems, /healthz 200."""
    async with serve(kind, participants, opened=False) as served:
        assert "not open" in is_problem(await ask(http, f"{served.url}/readyz"), 503)["detail"]
        is_problem(await ask(http, f"{served.url}/workflows/wf-1"), 503)
        assert (await ask(http, f"{served.url}/healthz")).status == 200
        assert served.agg.state == "new"


async def test_status_page_files_and_ui_redirect(served: Served, http: aiohttp.ClientSession) -> None:
    """/ui/ and its files with their types and a CSP; /ui redirects to the relative ui/; an unknown file is 404."""
    page = await ask(http, f"{served.url}/ui/")
    assert (page.status, page.content_type) == (200, "text/html; charset=utf-8")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await ask(http, f"{served.url}/ui/index.html")).body == page.body
    assert (await ask(http, f"{served.url}/ui/app.js")).content_type == "text/javascript; charset=utf-8"
    assert (await ask(http, f"{served.url}/ui/style.css")).content_type == "text/css; charset=utf-8"
    is_problem(await ask(http, f"{served.url}/ui/secret.txt"), 404)
    redirect = await ask(http, f"{served.url}/ui")
    assert (redirect.status, redirect.headers["Location"]) == (302, "ui/")
    async with http.get(f"{served.url}/ui") as followed:  # relative: it stays under the mount
        assert followed.status == 200 and str(followed.url) == f"{served.url}/ui/"


async def test_unknown_routes_and_methods_are_problems(served: Served, http: aiohttp.ClientSession) -> None:
    """No such route: 404 problem; a route without that method: 405 problem with Allow."""
    for path in ("/nothing", "/workflows/a/b/c", "/workflows/wf-1/unknown"):
        is_problem(await ask(http, served.url + path), 404)
    for method, path, allowed in (
        ("POST", "/workflows/wf-1", {"GET", "HEAD"}),
        ("DELETE", "/healthz", {"GET", "HEAD"}),
        ("GET", "/workflows/wf-1/redrive", {"POST"}),
        ("PUT", "/redrives", {"GET", "HEAD", "POST"}),
        ("POST", "/redrives/x", {"GET", "HEAD", "DELETE"}),
    ):
        reply = await ask(http, served.url + path, method)
        is_problem(reply, 405)
        assert reply.allow == allowed, (method, path)


async def test_bearer_token_guards_all_but_the_open_routes(
    kind: str, participants: Participants, http: aiohttp.ClientSession
) -> None:
    """With a token set: no, wrong or two tokens get 401 + WWW-Authenticate; health and page files stay open."""
    async with serve(kind, participants, token="s3cret-token") as served:
        url = f"{served.url}/workflows/wf-1"
        good = {"Authorization": "Bearer s3cret-token"}
        for headers in (
            None,
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic czNjcmV0"},
            [*good.items()] * 2,
        ):
            refused = await ask(http, url, headers=headers)
            is_problem(refused, 401)
            assert refused.headers["WWW-Authenticate"] == 'Bearer realm="aggregator"'
            assert b"s3cret" not in refused.body
        assert (await ask(http, url, headers=good)).status == 200
        for path in ("/healthz", "/readyz", "/ui/", "/ui/app.js", "/ui"):
            assert (await ask(http, served.url + path)).status in (200, 302), path
        for path in (
            "/metrics",
            "/openapi.json",
            "/workflows?id=wf-1",
            "/workflows?state=IN_PROGRESS",
            "/summary",
            "/workflows/healthz",
            "/workflows/x/watch",
            "/nothing",
        ):
            is_problem(await ask(http, served.url + path), 401)
        is_problem(await ask(http, f"{served.url}/workflows/wf-1/redrive", "POST"), 401)
        is_problem(await post_json(http, f"{served.url}/redrives", {"filter": {"stalled": True}}), 401)
        for method in ("GET", "DELETE"):
            is_problem(await ask(http, f"{served.url}/redrives/x", method), 401)
        is_problem(await ask(http, f"{served.url}/redrives"), 401)
        accepted = await post_json(
            http,
            f"{served.url}/redrives",
            {"ids": ["wf-1"], "dry_run": True},
            {"Authorization": good["Authorization"]},
        )
        assert accepted.status == 202
        described = (await ask(http, f"{served.url}/openapi.json", headers=good)).json()
        assert described["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}


# -- the two servers, compared ---------------------------------------------------------------

#: Requests both servers get, in this order (``{etag}`` is wf-1's ETag): (method, path, headers).
REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/workflows/wf-1", {}),
    ("GET", "/workflows/wf-1", {"If-None-Match": "{etag}"}),
    ("GET", "/workflows/wf-1", {"If-None-Match": '"x", W/{etag}'}),
    ("HEAD", "/workflows/wf-1", {}),
    ("GET", "/workflows/wf-1", {"Cache-Control": "max-age=5"}),
    ("GET", "/workflows/wf-1", {"Cache-Control": "no-cache"}),
    ("GET", "/workflows/wf-1?timeout_ms=900", {}),
    ("GET", "/workflows/wf-1?min_version=payment:1&min_version=order:1", {}),
    ("GET", "/workflows/wf-1?min_version=payment:2&timeout_ms=50", {}),
    ("GET", "/workflows/wf-done", {}),
    ("GET", "/workflows/nobody", {}),
    ("GET", "/workflows/bad%20id", {}),
    ("GET", "/workflows/" + "x" * 129, {}),
    ("GET", "/workflows/wf%2D1", {}),
    ("GET", "/workflows/a%2Fb", {}),
    ("GET", "/workflows/a%2fb/timeline", {}),
    ("GET", "/workflows/a/b", {}),
    ("POST", "/workflows/wf-1/watch", {}),
    ("GET", "/workflows/%C3%A9", {}),
    # Decoded line breaks: the mount must still route them to the aggregator (its 400, not the host's 404).
    ("GET", "/workflows/a%0Ab", {}),
    ("GET", "/workflows/a%0Ab/timeline", {}),
    ("POST", "/workflows/%0A/redrive", {}),
    ("GET", "/redrives/x%0Ay", {}),
    ("GET", "/ui/a%0Ab.js", {}),
    ("GET", "/nothing%0A", {}),
    ("GET", "/workflows/wf-1?", {}),
    ("GET", "/workflows/wf-1?timeout_ms=", {}),
    ("GET", "/workflows/wf-1?unknown=1", {}),
    ("GET", "/workflows/wf-1", {"Cache-Control": "MAX-AGE=5, no-transform"}),
    ("GET", "/workflows/wf-down", {}),
    ("GET", "/workflows/wf-dead", {}),
    ("GET", "/workflows/wf-1?timeout_ms=abc", {}),
    ("GET", "/workflows/wf-1?min_version=nobody:2", {}),
    ("GET", "/workflows/wf-1", {"Cache-Control": "max-age=soon"}),
    ("GET", "/workflows?id=wf-done&id=nobody&id=wf-1", {}),
    ("GET", "/workflows?id=wf-1&timeout_ms=500&min_version=order:1", {}),
    ("GET", "/workflows", {}),
    ("GET", "/workflows?" + "&".join(f"id=w{i}" for i in range(101)), {}),
    ("GET", "/workflows?id=a&ids=b", {}),
    ("GET", "/workflows?id=bad%20id", {}),
    ("GET", "/workflows?id=", {}),
    ("GET", "/workflows?id=wf-1;id=wf-done", {}),
    ("GET", "/workflows?id=wf-1&id=wf-1", {}),
    ("GET", "/workflows?id=wf%2D1&id=nobody", {}),
    ("GET", "/workflows?stalled=true", {}),
    ("GET", "/workflows?stalled=true&limit=1", {}),
    ("GET", "/workflows?stalled=true&limit=0", {}),
    ("GET", "/workflows?stalled=true&id=wf-1", {}),
    ("GET", "/workflows?state=IN_PROGRESS", {}),
    ("GET", "/workflows?state=IN_PROGRESS&state=FAILED&limit=1", {}),
    ("GET", "/workflows?state=IN_PROGRESS&step=shipping&updated_before=2030-01-01T00:00:00Z", {}),
    ("GET", "/workflows?state=NOPE", {}),
    ("GET", "/workflows?state=IN_PROGRESS&cursor=bad", {}),
    ("GET", "/workflows?state=IN_PROGRESS&limit=0", {}),
    ("GET", "/workflows?state=IN_PROGRESS&id=wf-1", {}),
    ("GET", "/summary", {}),
    ("GET", "/summary?updated_after=2026-01-01T00:00:00Z", {}),
    ("GET", "/summary?updated_after=soon", {}),
    ("GET", "/summary?x=1", {}),
    ("POST", "/summary", {}),
    ("GET", "/workflows/summary", {}),
    ("GET", "/workflows/wf-done/timeline", {}),
    ("GET", "/workflows/nobody/timeline", {}),
    ("GET", "/workflows/bad%20id/timeline", {}),
    ("POST", "/workflows/wf-1/redrive", {}),
    ("POST", "/workflows/bad%20id/redrive", {}),
    ("POST", "/redrives", {}),
    ("GET", "/redrives", {}),
    ("GET", "/redrives?x=1", {}),
    ("GET", "/redrives/nothing", {}),
    ("DELETE", "/redrives/nothing", {}),
    ("PUT", "/redrives", {}),
    ("GET", "/healthz", {}),
    ("GET", "/readyz", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/ui", {}),
    ("GET", "/ui/", {}),
    ("GET", "/ui/index.html", {}),
    ("GET", "/ui/app.js", {}),
    ("GET", "/ui/style.css", {}),
    ("GET", "/ui/nothing.js", {}),
    ("GET", "/nothing", {}),
    ("GET", "/workflows/wf-1/unknown", {}),
    ("GET", "/workflows/", {}),
    ("GET", "/healthz/", {}),
    ("POST", "/workflows/wf-1", {}),
    ("DELETE", "/healthz", {}),
    ("OPTIONS", "/workflows/wf-1", {}),
    ("PUT", "/ui/", {}),
    ("GET", "/workflows/wf-1/redrive", {}),
    ("POST", "/workflows/wf-1/watch", {}),
    ("GET", "/workflows/bad%20id/watch", {}),
    ("GET", "/workflows/wf-1/watch?timeout_ms=abc", {}),
    ("GET", "/metrics", {}),
]
#: The same with a token configured: who gets in, and how the others are refused.
GOOD = "Bearer s3cret-token"
AUTH_REQUESTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("GET", "/workflows/wf-1", []),
    ("GET", "/workflows/wf-1", [("Authorization", "Bearer wrong")]),
    ("GET", "/workflows/wf-1", [("Authorization", "bearer s3cret-token")]),
    ("GET", "/workflows/wf-1", [("Authorization", GOOD), ("Authorization", GOOD)]),
    ("GET", "/workflows/wf-1", [("Authorization", GOOD)]),
    ("GET", "/workflows/healthz", []),
    ("GET", "/workflows/x/watch", []),
    ("GET", "/workflows/wf-1/timeline", []),
    ("POST", "/workflows/wf-1/redrive", []),
    ("POST", "/redrives", []),
    ("GET", "/redrives", []),
    ("DELETE", "/redrives/x", []),
    ("GET", "/workflows?id=wf-1", []),
    ("GET", "/workflows?state=IN_PROGRESS", []),
    ("GET", "/summary", []),
    ("GET", "/metrics", []),
    ("GET", "/openapi.json", []),
    ("GET", "/openapi.json", [("Authorization", GOOD)]),
    ("GET", "/healthz", []),
    ("GET", "/readyz", []),
    ("GET", "/ui", []),
    ("GET", "/ui/", []),
    ("GET", "/ui/app.js", []),
    ("GET", "/nothing", []),
    ("GET", "/nothing", [("Authorization", GOOD)]),
    ("POST", "/healthz", []),
    ("POST", "/healthz", [("Authorization", GOOD)]),
]


@contextlib.asynccontextmanager
async def both(fakes: Participants, **options: Any) -> AsyncIterator[tuple[Served, Served]]:
    """The aiohttp and the ASGI server at once, each with its own aggregator over ``fakes``."""
    async with serve("aiohttp", fakes, **options) as first, serve("asgi", fakes, **options) as second:
        yield first, second


def differences(answers: list[tuple[str, Reply, Reply]]) -> list[str]:
    """Each request whose two answers are not :func:`comparable`, both answers shown."""
    return [
        f"{request}:\n  aiohttp {comparable(a)}\n  asgi    {comparable(b)}"
        for request, a, b in answers
        if comparable(a) != comparable(b)
    ]


async def test_both_servers_answer_every_request_alike(
    participants: Participants, http: aiohttp.ClientSession
) -> None:
    """Both servers give each request the same status, type, headers, Allow and body (times masked), and metrics."""
    async with both(participants) as servers:
        etags = {(await ask(http, f"{s.url}/workflows/wf-1")).headers["ETag"] for s in servers}
        assert len(etags) == 1, etags  # the ETag comes from the parts' versions, not the server
        etag = etags.pop()
        answers = []
        for method, path, headers in REQUESTS:
            given = {k: v.replace("{etag}", etag) for k, v in headers.items()}
            replies = [await ask(http, s.url + path, method, given) for s in servers]
            answers.append((f"{method} {path} {given}", *replies))
        counts = [
            sorted(line for line in r.body.decode().splitlines() if line.startswith("aggregator_views_total"))
            for r in answers[-1][1:]
        ]
    assert differences(answers) == []
    assert counts[0] == counts[1] and counts[0], counts
    assert {a.status for _, a, _ in answers} >= {200, 202, 302, 304, 400, 404, 405, 503}


async def test_both_servers_authenticate_alike(
    participants: Participants, http: aiohttp.ClientSession
) -> None:
    """With a token configured, both servers let in and refuse the same requests with the same answers."""
    async with both(participants, token="s3cret-token") as servers:
        answers = []
        for method, path, headers in AUTH_REQUESTS:
            replies = [await ask(http, s.url + path, method, headers) for s in servers]
            answers.append((f"{method} {path} {headers}", *replies))
    assert differences(answers) == []
    assert [a.status for _, a, _ in answers].count(401) == 17


async def test_both_servers_stream_the_same_frames(
    participants: Participants, http: aiohttp.ClientSession
) -> None:
    """Both servers' watch streams have the same status, headers and first frame (the view's times masked)."""

    async def first_frame(served: Served) -> tuple[Any, ...]:
        async with http.get(f"{served.url}/workflows/wf-1/watch") as stream:
            headers = {
                n: stream.headers.get(n) for n in ("Content-Type", "Cache-Control", "X-Accel-Buffering")
            }
            async with asyncio.timeout(5):
                raw = await stream.content.readuntil(b"\n\n")
        lines = [
            f"data: {json.dumps(masked(json.loads(line[6:])))}" if line.startswith("data: ") else line
            for line in raw.decode().split("\n")
        ]
        return stream.status, headers, lines

    async with both(participants) as servers:
        frames = [await first_frame(s) for s in servers]
    assert frames[0] == frames[1]
    assert [line.split(":")[0] for line in frames[0][2]] == ["id", "event", "data", "", ""]


# -- the watch stream ----------------------------------------------------------------------


async def next_event(response: aiohttp.ClientResponse, timeout: float = 5.0) -> dict[str, str]:
    """The next SSE event of ``response`` (comments skipped): its fields."""
    event: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while True:
            line = (await response.content.readline()).decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if not line:
                if event:
                    return event
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


async def test_watch_streams_views_as_they_change_and_frees_its_slot(
    kind: str, participants: Participants, http: aiohttp.ClientSession
) -> None:
    """The first view at once, a new one when a part changes; the client leaving frees the slot."""
    async with serve(kind, participants) as served:
        started = time.monotonic()
        async with http.get(f"{served.url}/workflows/wf-1/watch") as stream:
            assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
            assert (stream.headers["Cache-Control"], stream.headers["X-Accel-Buffering"]) == (
                "no-cache",
                "no",
            )
            first = await next_event(stream)
            assert time.monotonic() - started < 1.0
            assert first["event"] == "view" and json.loads(first["data"])["state"] == "IN_PROGRESS"
            assert first["id"] == (await ask(http, f"{served.url}/workflows/wf-1")).headers["ETag"]
            assert served.agg.watchers.count == 1
            participants.set("shipping", "wf-1", "SCHEDULED")
            second = json.loads((await next_event(stream))["data"])
            assert (second["step"], second["parts"]["shipping"]["state"]) == ("order", "SCHEDULED")
        await until(lambda: served.agg.watchers.count == 0, 5.0)


async def test_watchers_past_the_limit_get_a_503(
    kind: str, participants: Participants, http: aiohttp.ClientSession
) -> None:
    """Past max_watchers a watch is refused up front: 503 problem with Retry-After, never a 200 stream."""
    async with serve(kind, participants, max_watchers=2) as served, contextlib.AsyncExitStack() as streams:
        url = f"{served.url}/workflows/wf-1/watch"
        for _ in range(2):
            stream = await streams.enter_async_context(http.get(url))
            await next_event(stream)
        refused = await ask(http, url)
        assert is_problem(refused, 503) and refused.headers["Retry-After"] == "1"
        assert served.agg.watchers.count == 2


# -- what only the ASGI side has: the FastAPI gateway ----------------------------------------


async def test_gateway_serves_its_own_route_and_closes_the_aggregator_after_it_stops(
    participants: Participants, http: aiohttp.ClientSession
) -> None:
    """The FastAPI gateway serves /hello beside /status/...; its lifespan opens the aggregator and closes it at stop."""
    gateway = fastapi_gateway_example().build_gateway(load_definition().with_urls(participants.urls))
    agg = gateway.state.aggregator
    assert agg.state == "new"
    async with serve_with_uvicorn(gateway) as root:
        assert agg.state == "open"
        hello = await ask(http, f"{root}/hello")
        assert (hello.status, hello.json()) == (200, {"gateway": "hello"})
        assert (await ask(http, f"{root}/status/workflows/wf-done")).json()["state"] == "COMPLETED"
        assert (await ask(http, f"{root}/docs")).status == 200  # FastAPI's own pages are the gateway's
    assert agg.state == "closed"


@pytest.mark.slow
async def test_gateway_process_stops_at_sigterm_with_watch_streams_open(
    participants: Participants, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """SIGTERM to the example's process with two watch streams open: both end cleanly, it exits 0 within seconds."""
    port = free_port()
    log = tmp_path / "gateway.log"
    given = [f"--participant={name}={url}" for name, url in participants.urls.items()]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), "--port", str(port), *given, stdout=out, stderr=out
        )
    root = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(15):
            while True:
                assert proc.returncode is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    if (await ask(http, f"{root}/status/readyz")).status == 200:
                        break
                await asyncio.sleep(0.05)
        async with contextlib.AsyncExitStack() as streams:
            opened = [
                await streams.enter_async_context(http.get(f"{root}/status/workflows/{wf}/watch"))
                for wf in ("wf-1", "wf-done")
            ]
            for stream in opened:
                await next_event(stream)
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for stream in opened:  # each ends with its last chunk, not a dropped connection
                async with asyncio.timeout(5):
                    assert await stream.content.read() == b""
                assert stream.content.at_eof()
            async with asyncio.timeout(5):
                code = await proc.wait()
            assert time.monotonic() - stopped < 3.0
        assert code == 0, log.read_text()
        assert "Application shutdown complete" in log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As tests/aggregator/test_status_page.py launches it: headless, loopback only, no sandbox.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="needs the distribution's chromium (.ci/run installs it)")
@pytest.mark.slow
async def test_status_page_under_the_fastapi_mount_shows_a_workflow(participants: Participants) -> None:
    """Chromium opens /status/ui/?id=wf-1 on the FastAPI gateway and shows the workflow's state and parts."""
    playwright_api = pytest.importorskip("playwright.async_api")
    gateway = fastapi_gateway_example().build_gateway(load_definition().with_urls(participants.urls))
    async with serve_with_uvicorn(gateway) as root, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            answer = await page.goto(f"{root}/status/ui/?id=wf-1")
            assert answer.status == 200
            await page.locator("#wf-state", has_text="IN_PROGRESS").wait_for()
            assert await page.locator("#parts tbody tr").count() == 4
            participants.set("shipping", "wf-1", "SCHEDULED")  # the watch stream brings the change
            await page.locator("#parts tbody tr", has_text="SCHEDULED").wait_for()
            assert errors == []
        finally:
            await browser.close()


@contextlib.contextmanager
def socket_listening() -> Iterator[int]:
    """A port some other socket listens on while the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def _run_example(*args: str) -> tuple[int, str]:
    """``examples/fastapi_gateway.py ARGS`` as a process: its exit status and all it printed."""
    code, out, _ = await run_python(str(EXAMPLE), *args, timeout=60)
    return code, out


@pytest.mark.broker  # the demo starts its own
@pytest.mark.slow
async def test_gateway_demo_shows_every_sample_through_the_mount() -> None:
    """``--demo --once``: the example saga, the gateway in front, every outcome's view read under
    /status with the bearer token; exit 0."""
    code, out = await _run_example("--demo", "--once", "--token", "t0ken")
    assert code == 0, out
    lines = out.splitlines()
    assert sum(line.startswith("ok  ") for line in lines) == 4, out
    assert not any(line.startswith("FAIL") for line in lines) and "Traceback" not in out, out
    assert "/status  (mounted)" in out
    for state in ("COMPLETED", "FAILED", "COMPENSATED"):
        assert f"state     {state}" in out


@pytest.mark.broker
@pytest.mark.slow
async def test_gateway_demo_on_a_taken_port_is_one_error_and_status_1() -> None:
    """A port already in use: uvicorn's one error line, exit 1, no traceback."""
    with socket_listening() as port:
        code, out = await _run_example("--demo", "--port", str(port))
    assert code == 1, out
    assert "address already in use" in out and "Traceback" not in out, out


@pytest.mark.parametrize(
    ("args", "needle"),
    [(("--once",), "--once goes with --demo"), (("--demo", "--participant", "a=b"), "--demo starts its own")],
)
async def test_gateway_demo_arguments_that_do_not_go_together_are_usage_errors(
    args: tuple[str, ...], needle: str
) -> None:
    code, out = await _run_example(*args)
    assert code == 2 and needle in out and "Traceback" not in out, out
