"""Stalled workflows: found through the initiator, listed, redriven by hand and by themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from aggregator import Aggregator, NoInitiator, load_definition
from aggregator.definition import parse_definition
from aggregator.web import create_app
from contract import serve_app
from order_saga import SAMPLES, SPECS
from order_saga.broker import MosquittoBroker

from ..support import counts
from ..support import some_participants as participants

STALL_MS = 400


@pytest.mark.slow
async def test_a_workflow_whose_events_went_nowhere_is_listed_as_stalled_and_a_redrive_finishes_it(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """The order service alone takes an order: order.created reaches nobody, the workflow waits.
    After stall_after_ms it is listed as stalled; once the others run, a redrive (the order
    service republishes order.created with its original id) carries the saga to its end."""
    async with participants(session_broker, prefix, tmp_path, ["order"]) as first:
        dead = {n: "http://127.0.0.1:9" for n in ("payment", "inventory", "shipping")}
        definition = load_definition().with_urls({**first, **dead}).with_settings(stall_after_ms=STALL_MS)
        async with (
            Aggregator(definition) as agg,
            serve_app(create_app(agg)) as url,
            aiohttp.ClientSession() as http,
        ):
            async with http.post(
                f"{first['order']}/orders", json=SAMPLES["happy"].body(order_id="st-1")
            ) as r:
                assert r.status == 202
            async with http.get(f"{url}/workflows/st-1") as r:
                fresh = await r.json()
            async with http.get(f"{url}/workflows?stalled=true") as r:
                assert r.status == 200
                none_yet = await r.json()
            await asyncio.sleep(STALL_MS / 1000 + 0.3)
            async with http.get(f"{url}/workflows?stalled=true") as r:
                listed = await r.json()
            gauge = agg.metrics.value("aggregator_stalled_workflows")
    assert (fresh["state"], fresh["stalled"]) == ("IN_PROGRESS", False)
    assert none_yet["views"] == []
    assert [v["workflow_id"] for v in listed["views"]] == ["st-1"]
    assert listed["views"][0]["stalled"] is True
    assert gauge == 1

    # The others start late (their sessions are new: order.created is not queued for them).
    async with participants(session_broker, prefix, tmp_path, list(SPECS)) as urls:
        definition = load_definition().with_urls(urls).with_settings(stall_after_ms=STALL_MS)
        async with (
            Aggregator(definition) as agg,
            serve_app(create_app(agg)) as url,
            aiohttp.ClientSession() as http,
        ):
            async with http.get(f"{url}/workflows/st-1") as r:
                still = await r.json()
            async with http.post(f"{url}/workflows/st-1/redrive") as r:
                assert r.status == 202
                report = await r.json()
            for _ in range(200):
                async with http.get(f"{url}/workflows/st-1") as r:
                    done = await r.json()
                if done["state"] == "COMPLETED":
                    break
                await asyncio.sleep(0.05)
            applied = {n: (await counts(http, u))["applied"] for n, u in urls.items()}
    assert (still["state"], still["stalled"]) == ("IN_PROGRESS", True)
    assert report["participants"]["order"] == {"republished": 1}
    assert {n: a for n, a in report["participants"].items() if n != "order"} == {
        "payment": {"republished": 0},
        "inventory": {"republished": 0},
        "shipping": {"republished": 0},
    }
    assert (done["state"], done["stalled"]) == ("COMPLETED", False)
    # order applied shipping.scheduled; payment order.created; inventory payment.authorized;
    # shipping inventory.reserved: each exactly once.
    assert applied == {"order": 1, "payment": 1, "inventory": 1, "shipping": 1}


@pytest.mark.slow
async def test_redriving_a_finished_workflow_changes_nothing(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Every participant republishes; every consumer's inbox drops what it had applied."""
    async with participants(session_broker, prefix, tmp_path, list(SPECS)) as urls:
        definition = load_definition().with_urls(urls)
        async with Aggregator(definition) as agg, aiohttp.ClientSession() as http:
            async with http.post(
                f"{urls['order']}/orders", json=SAMPLES["unshippable"].body(order_id="st-2")
            ) as r:
                assert r.status == 202
            for _ in range(200):
                view = await agg.view("st-2")
                if view.state == "COMPENSATED" and all(p.state for p in view.parts.values()):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # let the last events land everywhere
            before = {n: await counts(http, u) for n, u in urls.items()}
            report = await agg.redrive("st-2")
            republished = sum(r["republished"] for r in report.values())
            for _ in range(200):
                now = {n: await counts(http, u) for n, u in urls.items()}
                if sum(c["duplicates"] - before[n]["duplicates"] for n, c in now.items()) >= republished - 1:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            after = {n: await counts(http, u) for n, u in urls.items()}
            again = await agg.view("st-2")
    assert republished >= 7  # every event the unshippable saga produced
    assert {n: after[n]["applied"] for n in urls} == {n: before[n]["applied"] for n in urls}
    assert sum(after[n]["duplicates"] - before[n]["duplicates"] for n in urls) > 0
    assert {n: (p.state, p.version) for n, p in again.parts.items()} == {
        n: (p.state, p.version) for n, p in view.parts.items()
    }


@pytest.mark.slow
async def test_auto_redrive_repairs_a_stall_by_itself(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """``redrive="auto"``: a workflow stalled by lost events finishes without anyone asking."""
    async with participants(session_broker, prefix, tmp_path, ["order"]) as first:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{first['order']}/orders", json=SAMPLES["declined"].body(order_id="st-3")
            ) as r:
                assert r.status == 202
    async with participants(session_broker, prefix, tmp_path, list(SPECS)) as urls:
        definition = load_definition().with_urls(urls).with_settings(stall_after_ms=STALL_MS)
        async with Aggregator(definition, redrive="auto") as agg:
            for _ in range(300):
                view = await agg.view("st-3")
                if view.state == SAMPLES["declined"].state and view.parts["order"].state == "CANCELLED":
                    break
                await asyncio.sleep(0.05)
            redrives = agg.metrics.value("aggregator_redrives_total", participant="order", outcome="ok")
    assert (view.state, view.stalled) == ("FAILED", False)
    assert redrives == 1


async def test_without_an_initiator_stalled_workflows_cannot_be_listed() -> None:
    """A definition without ``initiator``: a clear error, and auto redrive refuses to start."""
    text = 'name = "x"\n[participants.a]\nurl = "http://127.0.0.1:9"\n[[rules]]\nstate = "S"\n'
    definition = parse_definition(text)
    async with Aggregator(definition) as agg:
        with pytest.raises(NoInitiator):
            await agg.stalled()
    with pytest.raises(Exception, match="initiator"):
        Aggregator(definition, redrive="auto")
