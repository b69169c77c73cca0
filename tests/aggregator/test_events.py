"""Events freshness: parts kept fresh by the participants' own events, and the watch stream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import Aggregator, load_definition
from contract import new_event, new_watermark, serve_app, utc_now, watermark_topic
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import (
    Listener,
    Saga,
    aggregator_process,
    counts,
    events_aggregator,
    in_process_saga,
    needs_mosquitto,
    publish,
    serve_aggregator,
    until,
)

FINAL = {"order": 2, "payment": 1, "inventory": 1, "shipping": 1}


def _cached_versions(agg: Aggregator, wf: str) -> dict[str, int]:
    return {n: (p.version if (p := agg.store.get(n, wf)) else 0) for n in agg.definition.participants}


@pytest.mark.slow
async def test_saga_steps_arrive_as_events_and_reads_reach_no_participant(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Once the saga's events are in, views are served with source event and no participant call."""
    async with events_aggregator(saga, session_broker, prefix) as agg:
        wf = await saga.place("happy", order_id="evt-happy")
        await until(lambda: _cached_versions(agg, wf) == FINAL)
        before = {n: (await counts(saga.http, u))["status_requests"] for n, u in saga.urls.items()}
        views = [await agg.view(wf) for _ in range(20)]
        after = {n: (await counts(saga.http, u))["status_requests"] for n, u in saga.urls.items()}
    assert after == before
    assert before == dict.fromkeys(saga.urls, 0)
    assert all(v.state == "COMPLETED" for v in views)
    assert {p.source for v in views for p in v.parts.values()} == {"event"}
    assert views[-1].parts["order"].version == 2
    assert views[-1].anomalies == []
    assert agg.metrics.value("aggregator_events_total", outcome="applied") >= 5
    assert agg.metrics.value("aggregator_cache_lookups_total", participant="order", result="hit") == 20


async def test_out_of_order_and_duplicate_events_never_move_back(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """On a feed prefix no participant listens to: v1, v2, then v1 and v2 again; no fetch at all."""
    feed_prefix = f"{prefix}feed"

    def ev(state: str, version: int) -> bytes:
        return new_event(
            source="payment",
            name="refunded" if version == 2 else "authorized",
            subject="evt-order",
            state=state,
            version=version,
        ).to_json()

    async with events_aggregator(saga, session_broker, feed_prefix, heard=False) as agg:
        before = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
        await publish(session_broker.url, f"{feed_prefix}/payment/authorized", [ev("AUTHORIZED", 1)])
        await publish(session_broker.url, f"{feed_prefix}/payment/refunded", [ev("REFUNDED", 2)])
        await until(lambda: agg.metrics.value("aggregator_events_total", outcome="applied") == 2)
        await publish(session_broker.url, f"{feed_prefix}/payment/authorized", [ev("AUTHORIZED", 1)])
        await publish(session_broker.url, f"{feed_prefix}/payment/refunded", [ev("REFUNDED", 2)])
        await until(lambda: agg.metrics.value("aggregator_events_total", outcome="old") == 2)
        after = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
        part = agg.store.get("payment", "evt-order")
    assert after - before == 0
    assert part is not None
    assert (part.state, part.version, part.source, part.history) == (
        "REFUNDED",
        2,
        "event",
        ("AUTHORIZED", "REFUNDED"),
    )


async def test_a_gap_fetches_and_the_participant_overrules_an_event_it_never_made(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """An event that skips versions asks the participant; its answer (no record) beats the event."""
    feed_prefix = f"{prefix}feed"
    forged = new_event(
        source="payment", name="refunded", subject="evt-gap", state="REFUNDED", version=2
    ).to_json()
    async with events_aggregator(saga, session_broker, feed_prefix, heard=False) as agg:
        before = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
        await publish(session_broker.url, f"{feed_prefix}/payment/refunded", [forged])
        await until(
            lambda: agg.metrics.value("aggregator_events_contradicted_total", participant="payment") == 1
        )
        after = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
        part = agg.store.get("payment", "evt-gap")
    assert agg.metrics.value("aggregator_events_total", outcome="gap") == 1
    assert after - before == 1  # the gap's fetch: the participant has no record (404)
    assert part is not None
    assert (part.state, part.version, part.source) == (None, 0, "live")


async def test_invalid_and_foreign_events_are_ignored(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Garbage, dead letters and events of unknown producers change nothing."""
    feed_prefix = f"{prefix}feed"
    async with events_aggregator(saga, session_broker, feed_prefix, heard=False) as agg:
        stranger = new_event(
            source="billing", name="sent", subject="evt-x", state="SENT", version=1
        ).to_json()
        await publish(session_broker.url, f"{feed_prefix}/payment/refunded", [b"not json", b"{}"])
        await publish(session_broker.url, f"{feed_prefix}/billing/sent", [stranger])
        await publish(session_broker.url, f"{feed_prefix}/deadletter/payment", [b'{"reason": "x"}'])
        await until(lambda: agg.metrics.value("aggregator_events_total", outcome="ignored") == 4)
        assert len(agg.store) == 0


@needs_mosquitto
@pytest.mark.slow
async def test_broker_outage_falls_back_to_ttl_then_fresh_again(
    own_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Broker down: views still answer and readiness says degraded; back up: events flow again."""
    async with in_process_saga(own_broker.url, prefix, tmp_path) as saga:
        async with (
            events_aggregator(
                saga, own_broker, prefix, heard=False, ttl_ms=100, stale_while_revalidate_ms=0
            ) as agg,
            serve_aggregator(saga.urls) as plain,
        ):
            from aggregator.web import create_app

            async with serve_app(create_app(agg)) as url:
                first = await saga.place("happy", order_id="evt-outage-1")
                await until(lambda: _cached_versions(agg, first) == FINAL)
                own_broker.stop()
                await until(lambda: not agg.feed.healthy)  # type: ignore[union-attr]
                async with saga.http.get(f"{url}/readyz") as r:
                    ready = await r.json()
                assert r.status == 200
                assert ready["status"] == "degraded"
                assert ready["event_feed"]["connected"] is False
                assert agg.metrics.value("aggregator_broker_connected") == 0
                await asyncio.sleep(0.15)  # past the ttl: the fallback asks the participants
                async with saga.http.get(f"{url}/workflows/{first}") as r:
                    during = await r.json()
                assert r.status == 200
                assert during["state"] == "COMPLETED"
                assert {p["source"] for p in during["parts"].values()} == {"live"}
                own_broker.start()
                await until(lambda: agg.feed.healthy, timeout=15)  # type: ignore[union-attr]
                second = await saga.place("unshippable", order_id="evt-outage-2")
                await saga.wait_states(second, SAMPLES["unshippable"].parts)
                await until(
                    lambda: (
                        _cached_versions(agg, second)
                        == {"order": 2, "payment": 2, "inventory": 2, "shipping": 1}
                    )
                )
                view = await agg.view(second)
                async with saga.http.get(f"{url}/readyz") as r:
                    assert (await r.json())["status"] == "ready"
            assert plain.agg.feed is None
    assert view.state == "COMPENSATED"
    assert {p.source for p in view.parts.values()} == {"event"}
    assert agg.feed is not None and agg.feed.outages == 1


@pytest.mark.slow
async def test_watcher_receives_every_change_of_a_saga_in_order(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Started before the order exists, the watch yields each step's view, ending COMPLETED."""
    async with events_aggregator(saga, session_broker, prefix) as agg:
        seen: list[Any] = []

        async def collect() -> None:
            async for view in agg.watch("evt-watch"):
                seen.append(view)
                if view.state == "COMPLETED":
                    return

        watcher = asyncio.create_task(collect())
        await asyncio.sleep(0.1)
        assert agg.watchers.count == 1
        await saga.place("happy", order_id="evt-watch")
        async with asyncio.timeout(10):
            await watcher
        await asyncio.sleep(0)
        assert agg.watchers.count == 0
    total = [sum(p.version for p in v.parts.values()) for v in seen]
    assert total == sorted(total) and len(set(total)) == len(total)  # every view moves forward
    assert total[-1] == 5
    assert seen[-1].state == "COMPLETED"
    assert [v.etag for v in seen] == list(dict.fromkeys(v.etag for v in seen))


async def test_sse_stream_sends_views_and_heartbeats_and_cleans_up(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """GET …/watch is text/event-stream; a client that leaves is cleaned up; past the bound, 503."""
    wf = await saga.place("declined", order_id="evt-sse")
    await saga.wait_states(wf, SAMPLES["declined"].parts)
    async with serve_aggregator(saga.urls, watch_heartbeat_ms=50, watch_poll_ms=50, max_watchers=1) as served:
        async with aiohttp.ClientSession() as http:
            resp = await http.get(f"{served.url}/workflows/{wf}/watch")
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            lines: list[str] = []
            async with asyncio.timeout(5):
                while lines.count("") < 1 or not any(line.startswith(":") for line in lines):
                    lines.append((await resp.content.readline()).decode().rstrip("\n"))
            async with http.get(f"{served.url}/workflows/{wf}/watch") as second:
                assert second.status == 503
                assert second.content_type == "application/problem+json"
            resp.close()
        await until(lambda: served.agg.watchers.count == 0, timeout=5)
    event_lines = [line for line in lines if line.startswith("event:")]
    data = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert event_lines[0] == "event: view"
    assert data[0]["state"] == "FAILED"
    assert any(line.startswith("id: ") for line in lines)
    assert any(line == ": ping" for line in lines)


async def test_sse_rejects_invalid_ids(saga: Saga) -> None:
    """A watch of a malformed id is a 400, not a stream."""
    async with serve_aggregator(saga.urls) as served, aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/workflows/bad%20id/watch") as r:
            assert r.status == 400


@pytest.mark.slow
async def test_two_aggregator_processes_both_serve_the_fresh_view(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Replicas on one broker, each with its own subscription, both learn the saga from events alone."""
    overrides = [arg for name, url in saga.urls.items() for arg in ("--participant", f"{name}={url}")]
    common = ["--freshness", "events", "--broker", str(session_broker.url), "--prefix", prefix, *overrides]
    wf = "evt-replicas"
    async with aggregator_process(*common) as one, aggregator_process(*common) as two:
        for url in (one, two):
            async with saga.http.get(f"{url}/readyz") as r:
                assert (await r.json())["event_feed"]["connected"] is True
            async with saga.http.get(f"{url}/workflows/{wf}") as r:
                assert r.status == 404  # each replica now knows every part as "no record"
        before = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
        await saga.place("happy", order_id=wf)
        # Read the participants' stores directly: an HTTP poll would count as a status call.
        stores = {n: svc.store for n, svc in saga.services.items()}
        await until(
            lambda: (
                {n: (st := s.status(wf)) and st.state for n, s in stores.items()} == SAMPLES["happy"].parts
            )
        )
        views = {}
        for url in (one, two):
            for _ in range(200):
                async with saga.http.get(f"{url}/workflows/{wf}") as r:
                    views[url] = await r.json()
                if views[url]["state"] == "COMPLETED":
                    break
                await asyncio.sleep(0.02)
        after = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
    calls = {
        n: after[n]["status_requests"] + after[n]["batch_requests"]
        - before[n]["status_requests"] - before[n]["batch_requests"]
        for n in saga.urls
    }  # fmt: skip
    assert calls == dict.fromkeys(saga.urls, 0)
    for view in views.values():
        assert view["state"] == "COMPLETED"
        assert {n: p["source"] for n, p in view["parts"].items()} == dict.fromkeys(saga.urls, "event")
        assert {n: p["version"] for n, p in view["parts"].items()} == FINAL


async def test_events_mode_without_broker_is_a_clear_error() -> None:
    """Library use: freshness events with no broker given raises DefinitionError."""
    import pytest

    from aggregator import DefinitionError

    with pytest.raises(DefinitionError, match="needs a broker"):
        Aggregator(load_definition().with_settings(freshness="events"))


@pytest.mark.slow
async def test_a_new_workflow_is_read_without_any_participant_call(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """The initiator's creation event makes the others' parts known absent: every read of a new
    workflow, from its first event to its end, is served without asking anyone."""
    async with events_aggregator(saga, session_broker, prefix) as agg:
        before = {n: (await counts(saga.http, u))["status_requests"] for n, u in saga.urls.items()}
        wf = await saga.place("happy", order_id="evt-new")
        await until(lambda: agg.store.get("order", wf) is not None)
        first = await agg.view(wf)
        views = [first]
        while views[-1].state != "COMPLETED":
            await asyncio.sleep(0.005)
            views.append(await agg.view(wf))
        after = {n: (await counts(saga.http, u))["status_requests"] for n, u in saga.urls.items()}
    assert after == before
    assert all(p.source == "event" for v in views for p in v.parts.values())
    assert views[-1].parts["shipping"].state == "SCHEDULED"


async def test_the_initiators_creation_event_makes_the_other_parts_known_absent(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """order.created v1 alone (on a prefix no participant acts on): the view shows the other parts
    as "no record", from the event, without a call; a later event of theirs is applied on top."""
    feed_prefix = f"{prefix}feed"
    async with events_aggregator(saga, session_broker, feed_prefix, heard=False) as agg:
        # Made after the feed subscribed: an event produced before could have had predecessors
        # the feed missed, and proves nothing about the others.
        created = new_event(source="order", name="created", subject="evt-lone", state="PENDING", version=1)
        authorized = new_event(
            source="payment", name="authorized", subject="evt-lone", state="AUTHORIZED", version=1
        )
        # The others are alive: their watermarks reach this feed (absence is only inferred of
        # participants heard from since the feed came up).
        for name in ("payment", "inventory", "shipping"):
            mark = new_watermark(name, utc_now())
            await publish(session_broker.url, watermark_topic(feed_prefix, name), [mark.to_json()])
        assert agg.feed is not None
        await until(lambda: {"payment", "inventory", "shipping"} <= set(agg.feed.heard))
        before = {n: (await counts(saga.http, u))["status_requests"] for n, u in saga.urls.items()}
        await publish(session_broker.url, f"{feed_prefix}/order/created", [created.to_json()])
        await until(lambda: agg.store.get("shipping", "evt-lone") is not None)
        lone = await agg.view("evt-lone")
        await publish(session_broker.url, f"{feed_prefix}/payment/authorized", [authorized.to_json()])
        await until(lambda: (p := agg.store.get("payment", "evt-lone")) is not None and p.version == 1)
        later = await agg.view("evt-lone")
        after = {n: (await counts(saga.http, u))["status_requests"] for n, u in saga.urls.items()}
    assert after == before
    assert {n: (p.state, p.version, p.source) for n, p in lone.parts.items()} == {
        "order": ("PENDING", 1, "event"),
        "payment": (None, 0, "event"),
        "inventory": (None, 0, "event"),
        "shipping": (None, 0, "event"),
    }
    assert lone.state == "IN_PROGRESS" and lone.step == "payment"
    assert (later.parts["payment"].state, later.state, later.step) == (
        "AUTHORIZED",
        "IN_PROGRESS",
        "inventory",
    )


@pytest.mark.slow
async def test_watermarks_bound_a_quiet_workflows_staleness(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """A workflow quiet for 2.5 s: its staleness stays within about one watermark interval (1 s),
    and the participants' watermarks are on the broker for anyone to see."""
    async with Listener(session_broker.url, f"{prefix}/watermark/#") as marks:
        async with events_aggregator(saga, session_broker, prefix) as agg:
            wf = await saga.place("happy", order_id="evt-quiet")
            await until(lambda: _cached_versions(agg, wf) == FINAL)
            quiet_since = time.monotonic()
            await asyncio.sleep(2.5)
            view = await agg.view(wf)
            quiet_ms = (time.monotonic() - quiet_since) * 1000
            watermarks = agg.metrics.value("aggregator_events_total", outcome="watermark")
    assert {p.source for p in view.parts.values()} == {"event"}
    assert view.staleness_ms <= 2100  # two intervals and a little: not the 2.5 s of quiet
    assert view.staleness_ms < quiet_ms
    assert watermarks >= 4
    producers = {topic.rsplit("/", 1)[1] for topic, _ in marks.messages}
    assert producers == set(saga.urls)
    body = json.loads(marks.messages[-1][1])
    assert body["type"] == f"{body['source']}.watermark" and body["through"].endswith("Z")


@pytest.mark.slow
async def test_a_participant_silent_since_the_feed_came_up_is_neither_absent_nor_fine(
    own_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events mode, payment never came up: a new order's view asks it (missing, not "no record",
    incomplete), and /readyz names it as silent; inventory and shipping, heard from, are known absent."""
    import aggregator.core
    from aggregator.web import create_app
    from contract import topic_for

    monkeypatch.setattr(aggregator.core, "SILENT_AFTER_S", 0.3)
    order_url = "http://127.0.0.1:1"  # nobody listens: the order's part comes from its event
    definition = (
        load_definition()
        .with_urls({n: order_url for n in ("order", "payment", "inventory", "shipping")})
        .with_settings(freshness="events")
    )
    async with Aggregator(definition, broker=own_broker.url, prefix="silent") as agg:
        assert agg.feed is not None
        async with asyncio.timeout(10):
            await agg.feed.up.wait()
        for name in ("order", "inventory", "shipping"):  # alive: their watermarks arrive
            mark = new_watermark(name, utc_now())
            await publish(own_broker.url, watermark_topic("silent", name), [mark.to_json()])
        await until(lambda: {"order", "inventory", "shipping"} <= set(agg.feed.heard))
        created = new_event(source="order", name="created", subject="ord-s", state="PENDING", version=1)
        await publish(own_broker.url, topic_for("silent", created.type), [created.model_dump_json().encode()])
        await until(lambda: agg.store.get("order", "ord-s") is not None)
        view = await agg.view("ord-s")
        assert view.parts["order"].state == "PENDING" and view.parts["order"].source == "event"
        assert view.parts["inventory"].state is None and view.parts["inventory"].error is None  # known absent
        assert view.parts["payment"].error == "unavailable" and not view.complete  # asked: missing
        await asyncio.sleep(0.4)
        async with serve_app(create_app(agg)) as base, aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as r:
                ready = await r.json()
    assert ready["status"] == "degraded" and ready["event_feed"]["silent"] == ["payment"]
    assert "since the event feed came up: payment" in ready["detail"]
