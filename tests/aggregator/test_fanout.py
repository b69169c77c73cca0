"""Single flight, circuit breaker and hedging, counted at the participants."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from order_saga import SAMPLES, SPECS
from order_saga.broker import MosquittoBroker
from participants import ParticipantService

from ..support import (
    Saga,
    config,
    counts,
    foreign_server,
    in_process_saga,
    serve_aggregator,
    status_body,
)


@pytest.mark.slow
async def test_100_concurrent_reads_reach_each_participant_once(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Reads of one id that overlap share one call per participant (single flight)."""
    async with in_process_saga(session_broker.url, prefix, tmp_path) as saga:
        wf = await saga.place("happy")
        await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, spec in SPECS.items():
            cfg = config(session_broker.url, prefix, tmp_path / f"{name}.sqlite3", latency_ms=200)
            urls[name] = (await stack.enter_async_context(ParticipantService(spec, config=cfg))).url
        async with serve_aggregator(urls) as served:
            async with aiohttp.ClientSession() as http:
                before = {n: (await counts(http, u))["status_requests"] for n, u in urls.items()}

                async def read() -> int:
                    async with http.get(f"{served.url}/workflows/{wf}") as r:
                        assert (await r.json())["state"] == "COMPLETED"
                        return r.status

                statuses = await asyncio.gather(*(read() for _ in range(100)))
                after = {n: (await counts(http, u))["status_requests"] for n, u in urls.items()}
            coalesced = served.agg.metrics.value("aggregator_coalesced_total", participant="payment")
    assert statuses == [200] * 100
    assert {n: after[n] - before[n] for n in urls} == dict.fromkeys(urls, 1)
    assert coalesced == 99


@pytest.mark.slow
async def test_breaker_opens_after_failures_probes_and_closes_again(saga: Saga) -> None:
    """Five failures open it (calls stop reaching the participant); after the pause one probe closes it."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    healthy = {"on": False}
    calls = {"n": 0}

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if not healthy["on"]:
            return web.Response(status=500)
        return web.json_response(status_body(wf, "AUTHORIZED", 1))

    async with (
        foreign_server(flaky) as url,
        serve_aggregator({**saga.urls, "payment": url}, breaker_reset_ms=300) as served,
    ):
        agg = served.agg
        errors = [(await agg.view(wf)).parts["payment"].error for _ in range(8)]
        assert errors == ["unavailable"] * 5 + ["circuit_open"] * 3
        assert calls["n"] == 5
        assert agg.health().breakers["payment"] == "open"
        assert agg.metrics.value("aggregator_breaker_state", participant="payment") == 2
        await asyncio.sleep(0.35)
        healthy["on"] = True
        probe = await agg.view(wf)
        assert probe.parts["payment"].state == "AUTHORIZED"
        assert probe.parts["payment"].error is None
        assert agg.health().breakers["payment"] == "closed"
        assert calls["n"] == 6
        assert (
            agg.metrics.value(
                "aggregator_participant_calls_total", participant="payment", outcome="circuit_open"
            )
            == 3
        )


async def test_failed_probe_reopens_the_breaker(saga: Saga) -> None:
    """A half-open probe that fails opens the breaker again at once."""

    async def down(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502)

    async with (
        foreign_server(down) as url,
        serve_aggregator({**saga.urls, "payment": url}, breaker_reset_ms=200) as served,
    ):
        for _ in range(5):
            assert (await served.agg.view("ord-x")).parts["payment"].error == "unavailable"
        assert served.agg.health().breakers["payment"] == "open"
        await asyncio.sleep(0.25)
        assert (await served.agg.view("ord-x")).parts["payment"].error == "unavailable"  # the probe
        assert served.agg.health().breakers["payment"] == "open"
        assert (await served.agg.view("ord-x")).parts["payment"].error == "circuit_open"


async def test_hedge_fires_for_a_slow_call_and_wins(saga: Saga) -> None:
    """After 30 fast calls, one that stalls past p95 is hedged; the hedge answers first."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    seen = itertools.count()
    stall_at = 30

    async def sometimes_slow(request: web.Request) -> web.StreamResponse:
        if next(seen) == stall_at:
            await asyncio.sleep(1.0)
        return web.json_response(status_body(wf, "AUTHORIZED", 1))

    async with (
        foreign_server(sometimes_slow) as url,
        serve_aggregator({**saga.urls, "payment": url}) as served,
    ):
        for _ in range(stall_at):
            assert (await served.agg.view(wf)).parts["payment"].error is None
        started = time.perf_counter()
        view = await served.agg.view(wf)
        elapsed = time.perf_counter() - started
        hedges = served.agg.metrics.value("aggregator_hedges_total", participant="payment")
        wins = served.agg.metrics.value("aggregator_hedge_wins_total", participant="payment")
    assert view.parts["payment"].state == "AUTHORIZED"
    assert hedges == 1
    assert wins == 1
    assert elapsed < 0.5


@pytest.mark.slow
async def test_hedging_respects_its_budget_when_every_call_is_slow(saga: Saga) -> None:
    """A participant that turns slow for good gets at most 5% extra requests (plus a small burst)."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    seen = itertools.count()
    calls = {"n": 0}

    async def turns_slow(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if next(seen) >= 30:
            await asyncio.sleep(0.02)
        return web.json_response(status_body(wf, "AUTHORIZED", 1))

    async with foreign_server(turns_slow) as url, serve_aggregator({**saga.urls, "payment": url}) as served:
        views = 230
        for _ in range(views):
            await served.agg.view(wf)
        hedges = served.agg.metrics.value("aggregator_hedges_total", participant="payment")
    assert hedges >= 1
    assert hedges <= 0.05 * views + 2
    # A hedge cancelled because the first call answered may never reach the server.
    assert views <= calls["n"] <= views + hedges


async def test_concurrent_reads_of_different_workflows_share_one_batch_call(saga: Saga) -> None:
    """Twelve views of different workflows started together: one batch call per participant, no
    single status call; a lone read afterwards goes out alone, as a single status call."""
    placed = {o: await saga.place(o) for o in SAMPLES}
    for outcome, wf in placed.items():
        await saga.wait_states(wf, SAMPLES[outcome].parts)
    ids = [*placed.values(), *(f"unknown-{i}" for i in range(8))]
    async with serve_aggregator(saga.urls) as served:
        agg = served.agg
        before = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
        results = await asyncio.gather(*(agg.view(w) for w in placed.values()), return_exceptions=True)
        unknown = await asyncio.gather(*(agg.view(w) for w in ids[4:]), return_exceptions=True)
        middle = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
        lone = await agg.view(placed["happy"])
        after = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
        batched = agg.metrics.value("aggregator_batched_parts_total", participant="payment")
    states = [v.state for v in results if not isinstance(v, BaseException)]
    assert states == [SAMPLES[o].state for o in placed]
    assert all(type(e).__name__ == "WorkflowNotFound" for e in unknown)
    for name in saga.urls:
        assert middle[name]["batch_requests"] - before[name]["batch_requests"] == 2
        assert middle[name]["status_requests"] == before[name]["status_requests"]
        assert after[name]["status_requests"] - middle[name]["status_requests"] == 1
        assert after[name]["batch_requests"] == middle[name]["batch_requests"]
    assert batched == 12
    assert lone.state == "COMPLETED" and lone.parts["payment"].source == "live"


@pytest.mark.slow
async def test_a_batched_read_keeps_its_own_deadline(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Batched with others on a slow participant, a read with a short timeout_ms gives up on time."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, spec in SPECS.items():
            cfg = config(session_broker.url, prefix, tmp_path / f"{name}.sqlite3", latency_ms=300)
            urls[name] = (await stack.enter_async_context(ParticipantService(spec, config=cfg))).url
        async with serve_aggregator(urls) as served:
            from aggregator import ReadOptions

            agg = served.agg
            started = time.monotonic()
            short, long_ = await asyncio.gather(
                agg.view("w-short", ReadOptions(timeout_ms=50)),
                agg.view("w-long", ReadOptions(timeout_ms=1500)),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
    assert type(short).__name__ == "NoParticipantAnswered"  # its deadline came first: every part timed out
    assert "timeout" in str(getattr(short, "errors", ""))
    assert type(long_).__name__ == "WorkflowNotFound"  # the shared batch call answered: no record
    assert 0.3 <= elapsed < 1.5
    assert agg.metrics.value("aggregator_batched_parts_total", participant="payment") == 2


@pytest.mark.slow
async def test_reads_that_keep_coming_while_a_call_is_out_wait_for_one_batch_call(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Participants that take 150 ms: a first read goes out alone; forty reads of other workflows
    that follow one loop turn apart while it is out share batch calls (one turn apart, each would
    go out alone without the wait); a read 300 ms later, with nothing in flight, goes out alone."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, spec in SPECS.items():
            cfg = config(session_broker.url, prefix, tmp_path / f"{name}.sqlite3", latency_ms=150)
            urls[name] = (await stack.enter_async_context(ParticipantService(spec, config=cfg))).url
        async with aiohttp.ClientSession() as http, serve_aggregator(urls) as served:
            agg = served.agg
            before = {n: await counts(http, u) for n, u in urls.items()}
            first = asyncio.create_task(agg.view("w-first"))
            await asyncio.sleep(0.01)
            reads = []
            for i in range(40):
                reads.append(asyncio.create_task(agg.view(f"w-{i}")))
                await asyncio.sleep(0)  # the next read comes one loop turn later
            results = await asyncio.gather(first, *reads, return_exceptions=True)
            middle = {n: await counts(http, u) for n, u in urls.items()}
            await asyncio.sleep(0.3)
            lone = await asyncio.gather(agg.view("w-lone"), return_exceptions=True)
            after = {n: await counts(http, u) for n, u in urls.items()}
            batched = agg.metrics.value("aggregator_batched_parts_total", participant="payment")
    assert [type(r).__name__ for r in [*results, *lone]] == ["WorkflowNotFound"] * 42
    for name in urls:
        calls = {k: middle[name][k] - before[name][k] for k in ("status_requests", "batch_requests")}
        assert calls["batch_requests"] >= 1
        # 41 without the wait; a batch every 2 ms of a busy machine's loop while the reads come.
        assert calls["status_requests"] + calls["batch_requests"] <= 10, calls
        assert after[name]["status_requests"] - middle[name]["status_requests"] == 1
        assert after[name]["batch_requests"] == middle[name]["batch_requests"]
    # Without the wait none would be; a loop stalled by a loaded machine lets a few go alone.
    assert batched >= 35


async def test_a_slow_batch_call_is_hedged_by_one_batch_call(saga: Saga) -> None:
    """After 30 fast batch calls, one that stalls past p95 is hedged by a single second batch
    call for all its parts (not one call per part); the hedge answers first."""
    stall_at = 30
    batch_calls: list[list[str]] = []

    async def slow_once(request: web.Request) -> web.StreamResponse:
        ids = request.query.getall("workflow_id")
        batch_calls.append(ids)
        # The first call for the slow round stalls (its hedge, for the same ids, does not).
        if ids[0].startswith("w-slow-") and sum(c[0].startswith("w-slow-") for c in batch_calls) == 1:
            await asyncio.sleep(1.0)
        return web.json_response({"statuses": [status_body(w, "AUTHORIZED", 1) for w in ids], "missing": []})

    # A budget with room for a warm-up call that a busy machine slows past the hedge delay: the
    # slow round's hedge must not depend on none of them being hedged (budgets: tests/unit).
    async with (
        foreign_server(slow_once) as url,
        serve_aggregator({**saga.urls, "payment": url}, hedge_budget=0.2) as served,
    ):
        agg = served.agg
        for round_ in range(stall_at):
            views = await asyncio.gather(*(agg.view(f"w-{round_}-{i}") for i in range(3)))
            assert [v.parts["payment"].state for v in views] == ["AUTHORIZED"] * 3
        hedges = agg.metrics.value("aggregator_hedges_total", participant="payment")
        wins = agg.metrics.value("aggregator_hedge_wins_total", participant="payment")
        started = time.perf_counter()
        views = await asyncio.gather(*(agg.view(f"w-slow-{i}") for i in range(3)))
        elapsed = time.perf_counter() - started
        hedges = agg.metrics.value("aggregator_hedges_total", participant="payment") - hedges
        wins = agg.metrics.value("aggregator_hedge_wins_total", participant="payment") - wins
    assert [v.parts["payment"].state for v in views] == ["AUTHORIZED"] * 3
    assert (hedges, wins) == (1, 1)
    assert all(len(ids) == 3 for ids in batch_calls)  # every call, hedges too, one batch of 3
    slow = [f"w-slow-{i}" for i in range(3)]
    # The stalled call and its one hedge, nothing else for the slow round.
    assert [sorted(ids) for ids in batch_calls if ids[0].startswith("w-slow-")] == [slow, slow]
    assert elapsed < 0.5
