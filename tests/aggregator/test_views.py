"""Views of every saga outcome, 404/400, and real concurrency of the fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from order_saga import SAMPLES, SPECS
from order_saga.broker import MosquittoBroker
from participants import ParticipantService

from ..support import Saga, config, in_process_saga, order_body, serve_aggregator

VERSIONS = {
    "happy": {"order": 2, "payment": 1, "inventory": 1, "shipping": 1},
    "declined": {"order": 2, "payment": 1, "inventory": None, "shipping": None},
    "out-of-stock": {"order": 2, "payment": 2, "inventory": 1, "shipping": None},
    "unshippable": {"order": 2, "payment": 2, "inventory": 2, "shipping": 1},
}


@pytest.mark.parametrize("outcome", sorted(SAMPLES))
async def test_view_reconstructs_each_saga_outcome(saga: Saga, outcome: str) -> None:
    """State, completeness, every part's state, version and source, from live fetches."""
    wf = await saga.place(outcome)
    await saga.wait_states(wf, SAMPLES[outcome].parts)
    async with serve_aggregator(saga.urls) as served:
        started = time.perf_counter()
        async with saga.http.get(f"{served.url}/workflows/{wf}") as r:
            assert r.status == 200
            view = await r.json()
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert view["workflow_id"] == wf
    assert view["workflow"] == "order-fulfilment"
    assert view["state"] == SAMPLES[outcome].state
    assert view["complete"] is True
    assert view["anomalies"] == []
    assert {n: p["state"] for n, p in view["parts"].items()} == SAMPLES[outcome].parts
    assert {n: p["version"] for n, p in view["parts"].items()} == VERSIONS[outcome]
    assert {p["source"] for p in view["parts"].values()} == {"live"}
    assert all(p["error"] is None and p["latency_ms"] >= 0 for p in view["parts"].values())
    # Each part was asked for when the request started: its age at the view is at least its
    # call's latency, and no more than the whole request took.
    assert max(p["latency_ms"] for p in view["parts"].values()) <= view["staleness_ms"] <= elapsed_ms + 1


async def test_in_flight_saga_reports_the_step_it_waits_on(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Payment never hears of the order (another prefix): IN_PROGRESS, waiting on payment."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, spec in SPECS.items():
            isolated = prefix if name == "order" else f"{prefix}x"
            cfg = config(session_broker.url, isolated, tmp_path / f"{name}.sqlite3")
            urls[name] = (await stack.enter_async_context(ParticipantService(spec, config=cfg))).url
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{urls['order']}/orders", json=order_body("happy", "inflight-1")) as r:
                assert r.status == 202
            async with serve_aggregator(urls) as served:
                view = await served.agg.view("inflight-1")
    assert view.parts["order"].state == "PENDING"
    assert [view.parts[n].state for n in ("payment", "inventory", "shipping")] == [None, None, None]
    assert (view.state, view.step, view.complete) == ("IN_PROGRESS", "payment", True)


async def test_unknown_workflow_is_404_and_invalid_ids_are_400(saga: Saga) -> None:
    """404 only when every participant answered 404; malformed ids never reach a participant."""
    async with serve_aggregator(saga.urls) as served:
        async with saga.http.get(f"{served.url}/workflows/never-placed") as r:
            assert r.status == 404
            assert r.content_type == "application/problem+json"
        for bad in ("bad%20id", "x" * 129, "semi;colon", "%C3%A9t%C3%A9", "newline%0A"):
            async with saga.http.get(f"{served.url}/workflows/{bad}") as r:
                assert r.status == 400, bad
                assert r.content_type == "application/problem+json"
                assert "A-Za-z0-9" in (await r.json())["detail"]


async def test_four_participants_delayed_200ms_answer_concurrently(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Four parts at 200 ms each take about 200 ms, not 800: the fan-out is concurrent."""
    async with in_process_saga(session_broker.url, prefix, tmp_path / "fast") as fast:
        wf = await fast.place("happy")
        await fast.wait_states(wf, SAMPLES["happy"].parts)
    # The same databases, served again by participants that delay every status read.
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, spec in SPECS.items():
            cfg = config(session_broker.url, prefix, tmp_path / "fast" / f"{name}.sqlite3", latency_ms=200)
            slow = await stack.enter_async_context(ParticipantService(spec, config=cfg))
            urls[name] = slow.url
        async with serve_aggregator(urls) as served:
            started = time.perf_counter()
            view = await served.agg.view(wf)
            elapsed = time.perf_counter() - started
    assert view.state == "COMPLETED"
    assert all(p.latency_ms is not None and p.latency_ms >= 190 for p in view.parts.values())
    # One after another they would take 800 ms at least; the margin is for a loaded machine,
    # where the four participants share this process's event loop with the aggregator.
    assert elapsed < 0.65, f"{elapsed * 1000:.0f} ms for four 200 ms parts"


async def test_concurrent_views_of_many_workflows_are_independent(saga: Saga) -> None:
    """Twenty different workflows read at once each get their own correct view."""
    ids = {await saga.place(o): o for o in sorted(SAMPLES) * 5}
    await asyncio.gather(*(saga.wait_states(w, SAMPLES[o].parts) for w, o in ids.items()))
    async with serve_aggregator(saga.urls) as served:
        views = await asyncio.gather(*(served.agg.view(w) for w in ids))
    assert [v.state for v in views] == [SAMPLES[o].state for o in ids.values()]
