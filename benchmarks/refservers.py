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
* ``plain``: a plain aiohttp handler returning a constant JSON body (the server's ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

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


def build(kind: str, *, urls: list[str], db: str | None) -> web.Application:
    """The reference app of ``kind``."""
    app = web.Application()
    app[URLS] = urls
    handler = {
        "naive": naive, "sequential": sequential, "batching": batching, "central": central, "plain": plain
    }[kind]  # fmt: skip
    app.router.add_get("/workflows/{workflow_id}", handler)
    app.router.add_get("/healthz", lambda r: asyncio.sleep(0, web.json_response({"status": "ok"})))
    if kind in ("naive", "sequential"):
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
    parser.add_argument("kind", choices=["naive", "sequential", "batching", "central", "plain"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--participant", action="append", default=[])
    parser.add_argument("--db")
    args = parser.parse_args()
    app = build(args.kind, urls=args.participant, db=args.db)
    if args.kind == "batching":  # the product's runtime: uvloop where installed, its server settings
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
