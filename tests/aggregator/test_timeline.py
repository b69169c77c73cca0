"""``GET /workflows/{id}/timeline``: every participant's history merged in time order, over real participants."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from aggregator import Aggregator, NoParticipantAnswered, load_definition
from order_saga import SAMPLES

from ..support import Saga, foreign_server, raw_peer, read_request, serve_aggregator


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


async def test_a_timeline_cut_by_its_deadline_during_a_probe_lets_the_next_probe_go() -> None:
    """The breaker is half-open and a timeline's call is its probe; the read deadline cancels
    that call. The probe must be released: a later call probes again instead of finding the
    circuit shut for good."""
    answered: list[int] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        answered.append(1)
        if len(answered) == 1:
            writer.write(b"not http\r\n\r\n")  # the failure that opens the breaker
            await writer.drain()
        await reader.read()  # every later call hangs

    async with raw_peer(peer) as (url, _):
        definition = load_definition()
        payment = definition.participants["payment"].model_copy(update={"timeout_ms": 5000})
        definition = (
            definition.model_copy(update={"participants": {"payment": payment}, "orderings": []})
            .with_urls({"payment": url})
            .with_settings(deadline_ms=100, breaker_failures=1, breaker_reset_ms=50)
        )
        async with Aggregator(definition) as agg:
            with pytest.raises(NoParticipantAnswered) as opened:
                await agg.timeline("w-1")  # bad_response: the breaker opens
            await asyncio.sleep(0.08)  # half-open
            with pytest.raises(NoParticipantAnswered) as probe:
                await agg.timeline("w-1")  # the probe, cancelled at the 100 ms deadline
            await asyncio.sleep(0.01)
            with pytest.raises(NoParticipantAnswered) as again:
                await agg.timeline("w-1")
    assert opened.value.errors == {"payment": "bad_response"}
    assert probe.value.errors == {"payment": "timeout"}
    assert again.value.errors == {"payment": "timeout"}  # probed again, not circuit_open
    assert len(answered) == 3
