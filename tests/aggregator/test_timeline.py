"""``GET /workflows/{id}/timeline``: every participant's history merged in time order, over real participants."""

from __future__ import annotations

import asyncio

from aiohttp import web

from participants import SAMPLES

from ..support import Saga, foreign_server, serve_aggregator


async def test_timeline_of_a_compensated_saga_lists_every_transition_in_commit_order(saga: Saga) -> None:
    wf = await saga.place("unshippable")
    statuses = await saga.wait_states(wf, SAMPLES["unshippable"].parts)
    async with (
        serve_aggregator(saga.urls) as served,
        saga.http.get(f"{served.url}/workflows/{wf}/timeline") as r,
    ):
        assert r.status == 200
        body = await r.json()
    # Exactly the participants' own histories, nothing more, nothing less.
    expected = sorted(
        (h["at"], name, h["version"], h["state"])
        for name, status in statuses.items()
        if status is not None
        for h in status["history"]
    )
    got = [(e["at"], e["participant"], e["version"], e["state"]) for e in body["entries"]]
    assert got == expected
    assert [e["state"] for e in body["entries"]][:4] == ["PENDING", "AUTHORIZED", "RESERVED", "FAILED"]
    assert {e["source"] for e in body["entries"]} == {"live"}
    assert body["errors"] == {} and body["workflow_id"] == wf


async def test_timeline_unknown_invalid_and_a_participant_down(saga: Saga) -> None:
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async with foreign_server(broken) as down:
        urls = {**saga.urls, "shipping": down}
        async with serve_aggregator(urls) as served:
            async with saga.http.get(f"{served.url}/workflows/{wf}/timeline") as r:
                body = await r.json()
                assert r.status == 200
            assert body["errors"] == {"shipping": "unavailable"}
            assert {e["participant"] for e in body["entries"]} == {"order", "payment", "inventory"}
            async with saga.http.get(f"{served.url}/workflows/nobody-knows/timeline") as r:
                assert r.status == 200  # shipping could not say: not a 404
                assert (await r.json())["entries"] == []
        async with serve_aggregator(saga.urls) as served:
            async with saga.http.get(f"{served.url}/workflows/nobody-knows/timeline") as r:
                assert r.status == 404 and r.content_type == "application/problem+json"
            async with saga.http.get(f"{served.url}/workflows/bad%20id/timeline") as r:
                assert r.status == 400 and r.content_type == "application/problem+json"
        async with serve_aggregator(dict.fromkeys(saga.urls, down)) as served:
            async with saga.http.get(f"{served.url}/workflows/{wf}/timeline") as r:
                assert r.status == 503


async def test_timeline_is_bounded_by_the_deadline(saga: Saga) -> None:
    """A participant that never answers costs the deadline, not more; it is named a timeout."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(status=200)

    async with (
        foreign_server(hang) as slow,
        serve_aggregator({**saga.urls, "payment": slow}, deadline_ms=300) as served,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with saga.http.get(f"{served.url}/workflows/{wf}/timeline") as r:
            body = await r.json()
        assert loop.time() - started < 2.0
    assert body["errors"] == {"payment": "timeout"}
    assert {e["participant"] for e in body["entries"]} == {"order", "inventory", "shipping"}
