"""Reference servers the benchmarks measure the aggregator against, each run as its own process.

``python -m benchmarks.refservers KIND --port P [--participant URL …] [--db PATH]``:

* ``naive``: the fan-out everyone writes first: ``asyncio.gather`` of every participant's
  ``/status/{id}`` on a shared session, merged into one JSON, no cache, no validation;
* ``sequential``: the same, one participant after another;
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


def build(kind: str, *, urls: list[str], db: str | None) -> web.Application:
    """The reference app of ``kind``."""
    app = web.Application()
    app[URLS] = urls
    handler = {"naive": naive, "sequential": sequential, "central": central, "plain": plain}[kind]
    app.router.add_get("/workflows/{workflow_id}", handler)
    app.router.add_get("/healthz", lambda r: asyncio.sleep(0, web.json_response({"status": "ok"})))
    if kind in ("naive", "sequential"):
        app.cleanup_ctx.append(_session_ctx)
    if kind == "central":
        conn = sqlite3.connect(db or ":memory:", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        app[DB] = conn
    return app


def main() -> None:
    """Run one reference server."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refservers")
    parser.add_argument("kind", choices=["naive", "sequential", "central", "plain"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--participant", action="append", default=[])
    parser.add_argument("--db")
    args = parser.parse_args()
    web.run_app(
        build(args.kind, urls=args.participant, db=args.db),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
