"""Stalled workflows: found through the initiator, listed, redriven by hand and by themselves."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aggregator import Aggregator, NoInitiator, load_definition
from aggregator.definition import parse_definition
from aggregator.view import View
from aggregator.web import create_app
from contract import new_event, serve_app
from order_saga import SAMPLES, SPECS
from order_saga.broker import MosquittoBroker
from participants import ParticipantService

from ..support import config, counts, foreign_server, publish
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


async def until_view(agg: Aggregator, workflow_id: str, holds: Any, timeout: float = 10.0) -> View:
    """The first view of ``workflow_id`` for which ``holds(view)``, asked every 50 ms."""
    async with asyncio.timeout(timeout):
        while True:
            view = await agg.view(workflow_id)
            if holds(view):
                return view
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_each_stall_reason_is_told_from_real_participants(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """A lost order.created: ``no_progress``, waiting for payment; an ordering violated past the stall
    time (a forged payment.authorized that payment never made): ``anomaly``, waiting for payment;
    payment stopped: ``part_unavailable``, waiting for payment. Redriven, the first finishes and its
    stall is cleared; the counters say so."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(participants(session_broker, prefix, tmp_path, ["order"]))
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{first['order']}/orders", json=SAMPLES["happy"].body(order_id="np-1")
            ) as r:
                assert r.status == 202
        # The others start late: order.created went nowhere.
        urls = dict(first)
        for name in ("inventory", "shipping"):
            urls |= await stack.enter_async_context(participants(session_broker, prefix, tmp_path, [name]))
        payment = ParticipantService(
            SPECS["payment"], config=config(session_broker.url, prefix, tmp_path / "payment.sqlite3")
        )
        await payment.__aenter__()
        try:
            await payment.wait_ready()
            urls["payment"] = payment.url
            definition = load_definition().with_urls(urls).with_settings(stall_after_ms=STALL_MS)
            agg = await stack.enter_async_context(Aggregator(definition))
            forged = new_event(
                source="payment", name="authorized", subject="an-1", state="AUTHORIZED", version=1,
                domain={k: v for k, v in SAMPLES["happy"].body().items() if k != "order_id"},
            )  # fmt: skip
            await publish(session_broker.url, f"{prefix}/payment/authorized", [forged.to_json()])
            lost = await until_view(agg, "np-1", lambda v: v.stalled)
            violated = await until_view(agg, "an-1", lambda v: v.stalled)
            report = await agg.redrive("np-1")
            done = await until_view(agg, "np-1", lambda v: v.state == "COMPLETED")
        finally:
            await payment.__aexit__(None, None, None)
        down = await until_view(agg, "an-1", lambda v: v.parts["payment"].error is not None)
        metrics = agg.metrics
        raised = {
            r: metrics.value("aggregator_stalls_raised_total", reason=r) for r in ("no_progress", "anomaly")
        }
        cleared = metrics.value("aggregator_stalls_cleared_total", reason="no_progress")
    assert lost.stall is not None and (lost.stall.reason, lost.stall.waiting_for) == (
        "no_progress",
        ("payment",),
    )
    assert lost.to_json()["stall"]["since"] == lost.parts["order"].updated_at
    assert violated.stall is not None and violated.anomalies
    assert (violated.stall.reason, violated.stall.waiting_for) == ("anomaly", ("payment",))
    assert report["order"] == {"republished": 1}
    assert (done.stalled, done.stall) == (False, None)
    assert down.stall is not None and (down.stall.reason, down.stall.waiting_for) == (
        "part_unavailable",
        ("payment",),
    )
    assert raised == {"no_progress": 1, "anomaly": 1}
    assert cleared == 1


MAPPED = """
name = "mapped"
initiator = "desk"
[settings]
stall_after_ms = 400
[participants.desk]
url = "{url}"
states = ["OPEN", "DONE"]
[participants.desk.status]
path = "/desk/{{id}}"
state = "status"
time = "at"
[participants.desk.status.states]
open = "OPEN"
done = "DONE"
[participants.hotel]
url = "{url}"
states = ["BOOKED"]
[participants.hotel.status]
path = "/hotel/{{id}}"
state = "status"
time = "at"
[participants.hotel.status.states]
booked = "BOOKED"
[[rules]]
when = {{ desk = "DONE" }}
state = "DONE"
terminal = true
[[rules]]
state = "OPEN"
"""


async def test_a_state_no_mapping_knows_stalls_as_unmapped_and_fleet_queries_need_a_listing() -> None:
    """Two services read through mappings, one answering a state its table lacks: ``unmapped``,
    waiting for it; the mapped initiator has no listing, so fleet queries and the summary are 501
    problems, as the stalled list is."""

    async def answer(request: web.Request) -> web.Response:
        status = "open" if request.path.startswith("/desk/") else "overbooked"
        return web.json_response({"status": status, "at": "2026-01-01T00:00:00Z"})

    async with foreign_server(answer) as url:
        definition = parse_definition(MAPPED.format(url=url))
        async with (
            Aggregator(definition) as agg,
            serve_app(create_app(agg)) as base,
            aiohttp.ClientSession() as http,
        ):
            view = await agg.view("trip-9")
            answers = []
            for path in ("/workflows?stalled=true", "/workflows?state=OPEN", "/summary"):
                async with http.get(base + path) as r:
                    answers.append((r.status, (await r.json(content_type=None))["detail"]))
    assert view.parts["hotel"].error == "unmapped_state"
    assert view.stalled and view.stall is not None
    assert (view.stall.reason, view.stall.waiting_for) == ("unmapped", ("hotel",))
    assert [status for status, _ in answers] == [501, 501, 501]
    assert all("listing" in detail for _, detail in answers)
