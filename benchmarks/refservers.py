"""Reference servers the benchmarks measure the aggregator against, each run as its own process.

``python -m benchmarks.refservers KIND --port P [--participant URL …] [--db PATH]``:

* ``naive``: the fan-out everyone writes first: ``asyncio.gather`` of every participant's
  ``/status/{id}`` on a shared session, merged into one JSON, no cache, no validation;
* ``sequential``: the same, one participant after another;
* ``batching``: a bare batching aggregator: reads of different workflows asked for in one turn
  of the event loop, or while a call to the participant is out, share one call to its batch
  endpoint (``GET /status?workflow_id=a&workflow_id=b``, at most 100 ids); no cache, breaker,
  hedging, metrics or store, a minimal view. It runs on the product's runtime
  (:func:`contract.run`, uvloop where installed, and :func:`contract.serve_app`) with the
  client its peers here use (one shared ``aiohttp`` session);
* ``central``: what an orchestrator's status endpoint does: one SQLite row read per request
  (the workflow table of a central store) served by a plain aiohttp handler;
* ``plain``: a plain aiohttp handler returning a constant JSON body (the server's ceiling);
* ``naive-mapped``: the naive gather for the trip example's four services, each read on its own
  REST shape (``--participant NAME=URL`` for trips, flights, hotel and payments): one
  ``asyncio.gather`` of their single-id GETs, each answer parsed as JSON and its state picked
  with plain dict access (no JMESPath), merged into one JSON; same loop and client as ``naive``;
* ``synthetic``: a participant with no store, which answers for any id from memory after an
  injected delay (``--latency-ms`` ± ``--jitter-ms``, as ``python -m participants`` delays its
  status endpoints): ``--shape contract`` speaks §4 (``/status/{id}`` and the batch form, as
  participant ``--name``), ``--shape trips|flights|hotel|payments`` the trip example's own REST
  shape of that service (``trip_booking/trip.toml``). ``/healthz`` counts the calls it served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

import contract

URLS = web.AppKey("urls", list)
SESSION = web.AppKey("session", aiohttp.ClientSession)
DB = web.AppKey("db", sqlite3.Connection)


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app[SESSION] = session
        yield


async def _one(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json(content_type=None)


async def naive(request: web.Request) -> web.Response:
    """All participants at once."""
    wf = request.match_info["workflow_id"]
    urls = request.app[URLS]
    parts = await asyncio.gather(*(_one(request.app[SESSION], f"{u}/status/{wf}") for u in urls))
    return web.json_response({"workflow_id": wf, "parts": parts})


async def sequential(request: web.Request) -> web.Response:
    """One participant after another."""
    wf = request.match_info["workflow_id"]
    parts = [await _one(request.app[SESSION], f"{u}/status/{wf}") for u in request.app[URLS]]
    return web.json_response({"workflow_id": wf, "parts": parts})


async def central(request: web.Request) -> web.Response:
    """One row of a central workflow table."""
    row = (
        request.app[DB]
        .execute(
            "SELECT workflow_id, state, version, updated_at FROM workflows WHERE workflow_id = ?",
            (request.match_info["workflow_id"],),
        )
        .fetchone()
    )
    if row is None:
        return web.json_response({"detail": "not found"}, status=404)
    return web.json_response(dict(zip(("workflow_id", "state", "version", "updated_at"), row, strict=True)))


_PLAIN = json.dumps({"workflow_id": "x", "state": "COMPLETED", "version": 5}).encode()


async def plain(request: web.Request) -> web.Response:
    """A constant body."""
    return web.Response(body=_PLAIN, content_type="application/json")


#: Most ids per batch call (the participants' batch endpoint takes more).
BATCH_IDS = 100
Found = dict[str, Any] | None
"""One participant's status body for a workflow, or None where it has no record of it."""


class Batcher:
    """One participant's reads: those asked for while no call is out go at the end of the turn,
    those asked for while a call is out go together when it lands."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.pending: dict[str, asyncio.Future[Found]] = {}
        self.out = 0  # calls sent and not landed
        self.flush_due = False
        self.calls: set[asyncio.Task[None]] = set()

    def get(self, workflow_id: str) -> asyncio.Future[Found]:
        """The part of ``workflow_id``, from the next batch call."""
        future = self.pending.get(workflow_id)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self.pending[workflow_id] = loop.create_future()
            if not self.out and not self.flush_due:
                self.flush_due = True
                loop.call_soon(self.flush)
        return future

    def flush(self) -> None:
        """Send the pending reads, up to :data:`BATCH_IDS` per call."""
        self.flush_due = False
        pending, self.pending = self.pending, {}
        ids = list(pending)
        for start in range(0, len(ids), BATCH_IDS):
            self.out += 1
            task = asyncio.create_task(self.call({w: pending[w] for w in ids[start : start + BATCH_IDS]}))
            self.calls.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self.calls.discard)

    async def call(self, futures: dict[str, asyncio.Future[Found]]) -> None:
        """One batch call; when the last call out lands, the reads that came meanwhile go."""
        try:
            params = [("workflow_id", w) for w in futures]
            async with self.session.get(f"{self.url}/status", params=params) as resp:
                resp.raise_for_status()
                found = {s["workflow_id"]: s for s in json.loads(await resp.read())["statuses"]}
            for workflow_id, future in futures.items():
                if not future.done():  # done: its reader hung up, which cancelled it
                    future.set_result(found.get(workflow_id))
        except Exception as exc:  # every reader of the call sees its error
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.out -= 1
            if not self.out and self.pending and not self.flush_due:
                self.flush_due = True
                asyncio.get_running_loop().call_soon(self.flush)


BATCHERS = web.AppKey("batchers", list)


async def _batchers_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app[BATCHERS] = [Batcher(session, u) for u in app[URLS]]
        yield


async def batching(request: web.Request) -> web.Response:
    """Every participant's part through its batcher; 404 when none has a record."""
    wf = request.match_info["workflow_id"]
    found = [p for p in await asyncio.gather(*(b.get(wf) for b in request.app[BATCHERS])) if p]
    if not found:
        return web.json_response({"detail": "not found"}, status=404)
    parts = {p["participant"]: {"state": p["state"], "version": p["version"]} for p in found}
    return web.json_response({"workflow_id": wf, "parts": parts})


NAMED = web.AppKey("named", dict)
#: Each trip service's own path for one trip id (trip_booking/trip.toml's ``status.path``).
TRIP_PATHS = {
    "trips": "/api/trips/{id}",
    "flights": "/flights/bookings?trip={id}",
    "hotel": "/hotel/reservations/{id}",
    "payments": "/v2/payments?order_id={id}",
}


def _dig(doc: Any, *keys: str | int) -> Any:
    """``doc[k1][k2]…``, or None where a key or an index is not there (a 404's body)."""
    for key in keys:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


async def naive_mapped(request: web.Request) -> web.Response:
    """The trip services at once, each on its own path, the state picked by hand."""
    wf = request.match_info["workflow_id"]
    urls, session, q = request.app[NAMED], request.app[SESSION], quote(wf, safe="")
    trip, flight, hotel, payment = await asyncio.gather(
        *(_one(session, urls[name] + path.replace("{id}", q)) for name, path in TRIP_PATHS.items())
    )
    parts = {
        "trips": _dig(trip, "trip", "status"),
        "flights": _dig(flight, "bookings", 0, "state"),
        "hotel": _dig(hotel, "data", "attributes", "status"),
        "payments": _dig(payment, "items", 0, "status"),
    }
    return web.json_response({"workflow_id": wf, "parts": parts})


#: What a synthetic participant answers for every id: a trip that was booked, in each shape; as
#: a participant of the packaged order saga (``--shape contract --name order`` …), an order that
#: completed.
SYNTHETIC_STATES = {
    "trips": "CONFIRMED", "flights": "HELD", "hotel": "CONFIRMED", "payments": "CAPTURED",
    "order": "CONFIRMED", "payment": "AUTHORIZED", "inventory": "RESERVED", "shipping": "SCHEDULED",
}  # fmt: skip
#: States a synthetic participant went through before its own (the order saga's order was
#: PENDING first, which its orderings require of a CONFIRMED order's history).
SYNTHETIC_EARLIER = {"order": ["PENDING"]}
_AT = "2026-12-01T12:00:00.000000Z"
_EPOCH = 1796126400.0  # the same moment in seconds since the epoch
DELAY = web.AppKey("delay", tuple)
COUNTS = web.AppKey("counts", dict)


class Synthetic:
    """One synthetic participant's answers (see the module docstring); every id is known."""

    def __init__(self, shape: str, name: str) -> None:
        self.shape, self.name = shape, name
        self.state = SYNTHETIC_STATES.get(name, "DONE")
        states = [*SYNTHETIC_EARLIER.get(name, []), self.state]
        self.history = [{"state": state, "version": v, "at": _AT} for v, state in enumerate(states, 1)]

    def contract(self, wf: str) -> dict[str, Any]:
        """The §4 status body (one history entry, the one state a mapped answer carries too,
        but where :data:`SYNTHETIC_EARLIER` names earlier states)."""
        return {
            "participant": self.name,
            "workflow_id": wf,
            "state": self.state,
            "version": len(self.history),
            "updated_at": _AT,
            "history": self.history,
            "data": {},
        }

    def trip(self, wf: str) -> dict[str, Any]:
        return {"trip": {"id": wf, "status": "CONFIRMED", "rev": 2, "modified": _AT, "travellers": 2,
                         "nights": 3, "amount": 420.5}}  # fmt: skip

    def booking(self, wf: str) -> dict[str, Any]:
        return {"trip": wf, "state": "held", "updated": _EPOCH}

    def reservation(self, wf: str) -> dict[str, Any]:
        attributes = {"status": "confirmed", "version": 1, "updatedAt": _AT, "room": "double-101"}
        return {"data": {"type": "reservation", "id": wf, "attributes": attributes}}

    def payment(self, wf: str) -> dict[str, Any]:
        return {"order_id": wf, "status": "captured", "revision": 1, "updated": int(_EPOCH * 1000),
                "amount": 420.5}  # fmt: skip


async def _delayed(request: web.Request, kind: str) -> None:
    """Count the call, then wait as ``python -m participants --latency-ms --jitter-ms`` does."""
    request.app[COUNTS][kind] += 1
    latency_ms, jitter_ms = request.app[DELAY]
    delay = latency_ms + random.uniform(-jitter_ms, jitter_ms)
    if delay > 0:
        await asyncio.sleep(delay / 1000)


def _ids(request: web.Request, key: str) -> list[str]:
    return list(dict.fromkeys(i for v in request.query.getall(key, []) for i in v.split(",") if i))


def synthetic_routes(app: web.Application, synthetic: Synthetic) -> None:
    """The routes of ``synthetic``'s shape."""
    s = synthetic
    Handler = Callable[[web.Request], Awaitable[web.Response]]

    def one(kind: str, body: Callable[[str], dict[str, Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            await _delayed(request, kind)
            return web.json_response(body(request.match_info["id"]))

        return handler

    def many(key: str, wrap: str, record: Callable[[str], dict[str, Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            ids = _ids(request, key)
            await _delayed(request, "status_requests" if len(ids) == 1 else "batch_requests")
            return web.json_response({wrap: [record(i) for i in ids]})

        return handler

    add = app.router.add_get
    if s.shape == "contract":
        add("/status/{id}", one("status_requests", s.contract))

        async def batch(request: web.Request) -> web.Response:
            await _delayed(request, "batch_requests")
            ids = list(dict.fromkeys(request.query.getall("workflow_id", [])))
            return web.json_response({"statuses": [s.contract(i) for i in ids], "missing": []})

        add("/status", batch)
    elif s.shape == "trips":
        add("/api/trips/{id}", one("status_requests", s.trip))
        add("/api/trips", many("id", "trips", lambda wf: s.trip(wf)["trip"]))
    elif s.shape == "flights":
        add("/flights/bookings", many("trip", "bookings", s.booking))
    elif s.shape == "hotel":
        add("/hotel/reservations/{id}", one("status_requests", s.reservation))
    else:
        add("/v2/payments", many("order_id", "items", s.payment))


async def _counts(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "counts": request.app[COUNTS]})


def build_synthetic(shape: str, *, name: str, latency_ms: float, jitter_ms: float) -> web.Application:
    """A synthetic participant of ``shape`` (``contract`` or one of :data:`TRIP_PATHS`)."""
    app = web.Application()
    app[DELAY] = (latency_ms, jitter_ms)
    app[COUNTS] = {"status_requests": 0, "batch_requests": 0}
    app.router.add_get("/healthz", _counts)
    synthetic_routes(app, Synthetic(shape, name or shape))
    return app


def build(kind: str, *, urls: list[str], db: str | None) -> web.Application:
    """The reference app of ``kind``."""
    app = web.Application()
    app[URLS] = urls
    handler = {
        "naive": naive, "sequential": sequential, "batching": batching, "central": central, "plain": plain,
        "naive-mapped": naive_mapped,
    }[kind]  # fmt: skip
    app.router.add_get("/workflows/{workflow_id}", handler)
    app.router.add_get("/healthz", lambda r: asyncio.sleep(0, web.json_response({"status": "ok"})))
    if kind == "naive-mapped":
        named = dict(u.split("=", 1) for u in urls)
        assert set(named) == set(TRIP_PATHS), (
            f"naive-mapped needs --participant NAME=URL for {list(TRIP_PATHS)}"
        )
        app[NAMED] = named
    if kind in ("naive", "sequential", "naive-mapped"):
        app.cleanup_ctx.append(_session_ctx)
    if kind == "batching":
        app.cleanup_ctx.append(_batchers_ctx)
    if kind == "central":
        conn = sqlite3.connect(db or ":memory:", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        app[DB] = conn
    return app


async def _serve(app: web.Application, port: int) -> None:
    async with contract.serve_app(app, "127.0.0.1", port):
        await contract.wait_for_stop_signal()


def main() -> None:
    """Run one reference server."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refservers")
    parser.add_argument(
        "kind", choices=["naive", "sequential", "batching", "central", "plain", "naive-mapped", "synthetic"]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--participant", action="append", default=[])
    parser.add_argument("--db")
    parser.add_argument("--shape", choices=["contract", *TRIP_PATHS], default="contract")
    parser.add_argument("--name", default="", help="synthetic: the participant's name (default: the shape)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args()
    if args.kind == "synthetic":
        app = build_synthetic(
            args.shape, name=args.name, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms
        )
    else:
        app = build(args.kind, urls=args.participant, db=args.db)
    if args.kind in (
        "batching",
        "synthetic",
    ):  # the product's runtime: uvloop where installed, its server settings
        contract.run(_serve(app, args.port))
        return
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
