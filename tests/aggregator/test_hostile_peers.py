"""Peers and clients that say strange things: times no clock reads, a body in pieces, numbers past any float.

Each answer stays a clear one (a view, a 400), never a 500, a traceback or a hang.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from ..support import foreign_server, serve_aggregator

DEAD = "http://127.0.0.1:9"


def _order_answer(workflow_id: str, updated_at: str) -> dict[str, Any]:
    return {
        "participant": "order",
        "workflow_id": workflow_id,
        "state": "PENDING",
        "version": 1,
        "updated_at": updated_at,
        "history": [{"state": "PENDING", "version": 1, "at": updated_at}],
        "data": {},
    }


async def test_a_participant_writing_year_one_and_a_date_past_9999_still_gives_a_view() -> None:
    """The order service's part says it changed in year 1 and its answers' Date is in year 10000:
    the view is 200, stalled since the earliest time a view can write, and nothing is measured."""

    async def strange(request: web.Request) -> web.StreamResponse:
        workflow_id = request.path.rsplit("/", 1)[1]
        return web.json_response(
            _order_answer(workflow_id, "0001-01-01T00:00:00+14:00"),
            headers={"Date": "Fri, 01 Jan 10000 00:00:00 GMT"},
        )

    async with foreign_server(strange) as order:
        urls = {"order": order, "payment": DEAD, "inventory": DEAD, "shipping": DEAD}
        async with serve_aggregator(urls) as served, aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.get(f"{served.url}/workflows/odd-1") as r:
                    assert r.status == 200, await r.text()
                    view = await r.json()
                await asyncio.sleep(0.06)  # past the pace at which answers' Date is read
            async with http.get(f"{served.url}/healthz") as r:
                health = await r.json()
            async with http.get(f"{served.url}/workflows/odd-1/timeline") as r:
                assert r.status == 200
                timeline = await r.json()
    assert view["parts"]["order"]["state"] == "PENDING"
    assert view["parts"]["order"]["error"] is None
    assert view["stalled"] is True
    assert view["stall"]["since"] == "1970-01-01T00:00:00.000000Z"
    assert health["clock_offset_ms"]["order"] is None
    assert [e["state"] for e in timeline["entries"]] == ["PENDING"]


async def test_a_job_body_sent_in_pieces_is_read_whole_and_a_huge_number_is_a_400() -> None:
    """POST /redrives: the head, then the body in three writes a little apart, is one request;
    a 400-digit rate is a 400 problem, not a 500."""
    async with serve_aggregator(
        {"order": DEAD, "payment": DEAD, "inventory": DEAD, "shipping": DEAD}
    ) as served:
        host, port = served.url.removeprefix("http://").rsplit(":", 1)
        ids = [f"wf-{i:04d}-" + "x" * 100 for i in range(600)]  # about 66 KB
        body = json.dumps({"ids": ids, "dry_run": True}).encode()
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /redrives HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            third = len(body) // 3
            for piece in (body[:third], body[third : 2 * third], body[2 * third :]):
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(piece)
            await writer.drain()
            async with asyncio.timeout(10):
                answer = await reader.read()
        finally:
            writer.close()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{served.url}/redrives", data=b'{"ids": ["a"], "rate_per_s": ' + b"9" * 400 + b"}"
            ) as r,
        ):
            huge = (r.status, r.headers["Content-Type"], await r.json())
    head = answer.split(b"\r\n", 1)[0]
    assert head == b"HTTP/1.1 202 Accepted", answer[:300]
    assert huge[0] == 400 and huge[1].startswith("application/problem+json")
    assert "rate_per_s" in huge[2]["detail"]
