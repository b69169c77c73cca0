"""Workflow events: transitions published on the broker and POSTed to webhooks, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pytest
from aiohttp import web

from aggregator import Aggregator, load_definition
from aggregator.definition import Definition, parse_definition
from aggregator.errors import DefinitionError
from contract import new_event, serve_app
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import Listener, Saga, publish, raw_peer, until

SECRET_ENV = "NOTIFY_TEST_SECRET"
SECRET = "s3cret-for-tests"
#: The workflow events each sample outcome's saga makes, in order.
SEQUENCES = {
    "happy": ["IN_PROGRESS", "COMPLETED"],
    "declined": ["IN_PROGRESS", "FAILED"],
    "out-of-stock": ["IN_PROGRESS", "COMPENSATING", "COMPENSATED"],
    "unshippable": ["IN_PROGRESS", "COMPENSATING", "COMPENSATED"],
}


def _definition(urls: dict[str, str], notify: list[dict[str, Any]] = (), **settings: Any) -> Definition:  # type: ignore[assignment]
    base = load_definition().with_urls(urls).with_settings(freshness="events", **settings)
    return Definition.model_validate({**base.model_dump(), "notify": list(notify)})


@contextlib.asynccontextmanager
async def _aggregator(
    saga: Saga, broker: MosquittoBroker, prefix: str, definition: Definition, *, heard: bool = True
) -> AsyncIterator[Aggregator]:
    """An events-mode aggregator on ``prefix``, subscribed (and having heard every participant)."""
    async with Aggregator(definition, broker=broker.url, prefix=prefix) as agg:
        assert agg.feed is not None and agg.publisher is not None
        async with asyncio.timeout(10):
            await agg.feed.up.wait()
            await agg.publisher.up.wait()
            while heard and not set(saga.urls) <= set(agg.feed.heard):
                await asyncio.sleep(0.02)
        yield agg


def _events(listener: Listener) -> list[dict[str, Any]]:
    out = []
    for topic, payload in listener.messages:
        event = json.loads(payload)
        event["_topic"] = topic
        out.append(event)
    return out


def _names(events: list[dict[str, Any]], workflow_id: str) -> list[str]:
    return [e["type"].removeprefix("workflow.") for e in events if e["subject"] == workflow_id]


@dataclass
class Receiver:
    """A webhook receiver on port 0: answers ``failures`` 503s first, then 200; records what came."""

    failures: int = 0
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    attempts: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self.attempts <= self.failures:
            return web.Response(status=503)
        self.received.append((body, dict(request.headers)))
        return web.Response(status=204)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.received]


@contextlib.asynccontextmanager
async def _receiver(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    async with serve_app(app) as url:
        yield f"{url}/hook"


@pytest.mark.slow
async def test_a_saga_run_publishes_each_derived_state_once_with_the_view(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Each outcome's saga publishes its sequence of derived states on {prefix}/workflow/<state>,
    each a CloudEvent whose data is the view at that point, none of them read back as a part."""
    async with (
        Listener(session_broker.url, f"{prefix}/workflow/#") as listener,
        _aggregator(saga, session_broker, prefix, _definition(saga.urls)) as agg,
    ):
        placed = {outcome: await saga.place(outcome, order_id=f"wfe-{outcome}") for outcome in SEQUENCES}
        await listener.wait_for(
            lambda lst: all(_names(_events(lst), wf)[-1:] == [SAMPLES[o].state] for o, wf in placed.items()),
            timeout=20,
        )
        await asyncio.sleep(0.3)  # nothing more comes
        ignored = agg.metrics.value("aggregator_events_total", outcome="ignored")
        announced = agg.metrics.value("aggregator_workflow_events_total", outcome="announced")
        published = agg.metrics.value("aggregator_workflow_events_total", outcome="published")
    events = _events(listener)
    for outcome, wf in placed.items():
        assert _names(events, wf) == SEQUENCES[outcome], outcome
    assert len({e["id"] for e in events}) == len(events) == announced == published
    for event in events:
        state = event["type"].removeprefix("workflow.")
        assert event["_topic"] == f"{prefix}/workflow/{state}"
        assert event["specversion"] == "1.0"
        assert event["source"] == "aggregator"
        assert event["datacontenttype"] == "application/json"
        assert event["data"]["workflow_id"] == event["subject"]
        assert event["data"]["state"] == state
        assert event["data"]["complete"] is True
    done = next(e for e in events if e["subject"] == placed["happy"] and e["type"] == "workflow.COMPLETED")
    assert {n: p["state"] for n, p in done["data"]["parts"].items()} == SAMPLES["happy"].parts
    assert done["data"]["parts"]["order"]["version"] == 2
    assert ignored == 0  # the feed does not take the aggregator's own events for parts


@pytest.mark.slow
async def test_two_replicas_publish_the_same_transitions_under_the_same_ids(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Two aggregators on one broker: every event arrives twice, with one id; deduplicated by id,
    the subscriber sees each workflow's sequence exactly once."""
    definition = _definition(saga.urls)
    async with (
        Listener(session_broker.url, f"{prefix}/workflow/#") as listener,
        _aggregator(saga, session_broker, prefix, definition),
        _aggregator(saga, session_broker, prefix, definition),
    ):
        placed = {o: await saga.place(o, order_id=f"rep-{o}") for o in ("happy", "declined", "out-of-stock")}
        expected = sum(len(SEQUENCES[o]) for o in placed)
        await listener.wait_for(lambda lst: len(lst.messages) >= 2 * expected, timeout=20)
        await asyncio.sleep(0.3)
    events = _events(listener)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_id.setdefault(event["id"], []).append(event)
    assert len(events) == 2 * expected
    assert len(by_id) == expected
    for copies in by_id.values():
        assert len(copies) == 2
        assert {(c["type"], c["subject"], c["_topic"]) for c in copies} == {
            (copies[0]["type"], copies[0]["subject"], copies[0]["_topic"])
        }
    unique = [copies[0] for copies in by_id.values()]
    for outcome, wf in placed.items():
        assert _names(unique, wf) == SEQUENCES[outcome]


@pytest.mark.slow
async def test_a_webhook_that_fails_then_recovers_gets_every_event_signed_and_in_order(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver answers 503 three times, then 2xx: retried with backoff, it gets every event
    once, each with a valid X-Signature-256, in order per workflow."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    receiver = Receiver(failures=3)
    async with _receiver(receiver) as hook:
        definition = _definition(saga.urls, [{"url": hook, "secret_env": SECRET_ENV, "name": "shop"}])
        async with _aggregator(saga, session_broker, prefix, definition) as agg:
            placed = {o: await saga.place(o, order_id=f"hook-{o}") for o in ("happy", "declined")}
            await until(lambda: len(receiver.received) >= 4, timeout=20)
            await asyncio.sleep(0.3)
            metric = agg.metrics.value
            delivered = metric("aggregator_webhook_deliveries_total", receiver="shop", outcome="delivered")
            retried = metric("aggregator_webhook_deliveries_total", receiver="shop", outcome="retried")
    events = receiver.events()
    assert len(events) == 4 == delivered
    assert retried == 3
    for outcome, wf in placed.items():
        assert _names(events, wf) == SEQUENCES[outcome]
    for body, headers in receiver.received:
        assert headers["Content-Type"] == "application/cloudevents+json"
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Signature-256"], f"sha256={expected}")


@pytest.mark.slow
async def test_a_receiver_that_never_answers_loses_events_past_its_queue_and_slows_nothing(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that accepts connections and never answers: one event hangs in delivery, two
    wait in its queue, the rest are dropped and counted; the broker still gets every event and
    reads stay fast."""
    monkeypatch.setenv(SECRET_ENV, SECRET)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up

    async with raw_peer(silent) as (url, _):
        receiver = {"url": f"{url}/hook", "secret_env": SECRET_ENV, "queue": 2, "timeout_ms": 60_000}
        definition = _definition(saga.urls, [receiver])
        async with (
            Listener(session_broker.url, f"{prefix}/workflow/#") as listener,
            _aggregator(saga, session_broker, prefix, definition) as agg,
        ):
            placed = [await saga.place("happy", order_id=f"full-{i}") for i in range(3)]
            await listener.wait_for(lambda lst: len(lst.messages) >= 6, timeout=20)
            started = time.perf_counter()
            views = [await agg.view(wf) for wf in placed]
            read_s = time.perf_counter() - started
            dropped = agg.metrics.value(
                "aggregator_webhook_deliveries_total", receiver="0", outcome="dropped"
            )
            queued = agg.webhooks.receivers[0].queued
    assert [v.state for v in views] == ["COMPLETED"] * 3
    assert read_s < 0.5
    assert queued == 2
    assert dropped == 6 - 1 - 2  # one in delivery, two queued


@pytest.mark.slow
async def test_a_workflow_that_stops_moving_is_announced_stalled_then_recovered(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events on a prefix no participant listens to: an order created, then nothing for
    stall_after_ms: workflow.stalled; a payment event: workflow.recovered; the order confirmed:
    COMPLETED, never stalled again. A receiver asking for stalled and recovered gets only those."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    feed = f"{prefix}feed"
    wf = "stall-1"

    def event(source: str, name: str, state: str, version: int) -> bytes:
        return new_event(source=source, name=name, subject=wf, state=state, version=version).to_json()

    receiver = Receiver()
    async with _receiver(receiver) as hook:
        notify = [{"url": hook, "secret_env": SECRET_ENV, "states": ["stalled", "recovered"]}]
        definition = _definition(saga.urls, notify, stall_after_ms=600)
        async with (
            Listener(session_broker.url, f"{feed}/workflow/#") as listener,
            _aggregator(saga, session_broker, feed, definition, heard=False),
        ):
            await publish(
                session_broker.url, f"{feed}/order/created", [event("order", "created", "PENDING", 1)]
            )
            await listener.wait_for(lambda lst: _names(_events(lst), wf) == ["IN_PROGRESS"])
            started = time.monotonic()
            await listener.wait_for(lambda lst: _names(_events(lst), wf)[-1:] == ["stalled"], timeout=5)
            stalled_after = time.monotonic() - started
            payment = event("payment", "authorized", "AUTHORIZED", 1)
            await publish(session_broker.url, f"{feed}/payment/authorized", [payment])
            await listener.wait_for(lambda lst: _names(_events(lst), wf)[-1:] == ["recovered"])
            await publish(
                session_broker.url, f"{feed}/order/confirmed", [event("order", "confirmed", "CONFIRMED", 2)]
            )
            await listener.wait_for(lambda lst: _names(_events(lst), wf)[-1:] == ["COMPLETED"])
            await asyncio.sleep(0.9)  # past stall_after_ms: a finished workflow does not stall
            await until(lambda: len(receiver.received) >= 2)
    events = _events(listener)
    assert _names(events, wf) == ["IN_PROGRESS", "stalled", "recovered", "COMPLETED"]
    assert 0.4 < stalled_after < 2.0
    stalled = next(e for e in events if e["type"] == "workflow.stalled")
    assert stalled["_topic"] == f"{feed}/workflow/stalled"
    assert stalled["data"]["stalled"] is True
    assert stalled["data"]["state"] == "IN_PROGRESS"
    recovered = next(e for e in events if e["type"] == "workflow.recovered")
    assert recovered["data"]["stalled"] is False
    assert recovered["data"]["parts"]["payment"]["state"] == "AUTHORIZED"
    assert [e["type"] for e in receiver.events()] == ["workflow.stalled", "workflow.recovered"]


def _with_notify(notify: str) -> Definition:
    """The packaged definition's TOML with one ``[[notify]]`` table appended, parsed."""
    text = resources.files("aggregator").joinpath("order_saga.toml").read_text("utf-8")
    return parse_definition(f"{text}\n[[notify]]\n{notify}\n")


def test_a_webhook_with_a_bad_url_or_an_unknown_state_is_a_load_error_naming_the_key() -> None:
    """The URL, the variable's name and the states are checked when the definition loads."""
    for notify, key in (
        ('url = "ftp://example.com/x"\nsecret_env = "X"', "notify.0.url"),
        ('url = "http://user:pw@example.com/x"\nsecret_env = "X"', "notify.0.url"),
        ('url = "http://example.com/x"\nsecret_env = "not a name"', "notify.0.secret_env"),
        ('url = "http://example.com/x"', "notify.0.secret_env"),
    ):
        with pytest.raises(DefinitionError) as caught:
            _with_notify(notify)
        assert caught.value.field == key, notify
    with pytest.raises(DefinitionError, match=r"notify\[0\]\.states names 'DONE'"):
        _with_notify('url = "http://h/x"\nsecret_env = "X"\nstates = ["DONE"]')
    ok = _with_notify('url = "https://h:8443/x?k=1"\nsecret_env = "X"\nstates = ["COMPLETED", "stalled"]')
    assert ok.notify[0].states == ["COMPLETED", "stalled"]
    assert ok.notify[0].url == "https://h:8443/x?k=1"


def test_an_unset_or_empty_secret_is_an_error_when_the_aggregator_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Webhooks are always signed: a secret variable unset or empty stops the aggregator, naming the key."""
    definition = _definition({}, [{"url": "http://127.0.0.1:9/hook", "secret_env": SECRET_ENV}])
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(
        DefinitionError, match=rf"notify\[0\]\.secret_env names \${SECRET_ENV}, which is not set"
    ):
        Aggregator(definition, broker="mqtt://127.0.0.1:1")
    monkeypatch.setenv(SECRET_ENV, "")
    with pytest.raises(DefinitionError, match=r"which is empty"):
        Aggregator(definition, broker="mqtt://127.0.0.1:1")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    on_demand = Definition.model_validate(
        {
            **definition.model_dump(),
            "settings": {**definition.settings.model_dump(), "freshness": "on-demand"},
        }
    )
    with pytest.raises(DefinitionError, match="need freshness 'events'"):
        Aggregator(on_demand)
