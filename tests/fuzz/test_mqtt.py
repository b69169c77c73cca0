"""Hostile MQTT payloads on the saga's real topics, with both sides listening.

The four participants and an aggregator in ``events`` freshness share the session's Mosquitto
and one prefix. About 300 payloads that are invalid by construction (see ``_payloads``) go to
the topics the participants consume and to the ones only the aggregator reads. Afterwards:

* the aggregator's feed is still subscribed, counted every payload that is no event as
  ``ignored`` (ours, and the dead letters the participants published about them) and took the
  valid envelopes as events;
* every participant dead-lettered exactly the payloads of its topics, still answers
  ``/healthz`` and ``/readyz`` and never reconnected;
* no task ended and nothing logged an error; and a saga placed afterwards ends as it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from aggregator import Aggregator, load_definition
from contract import InvalidEvent, parse_event
from order_saga import SAMPLES, SPECS
from order_saga.broker import MosquittoBroker
from order_saga.saga import Order

from ..support import Saga, counts, publish
from ._payloads import Hostile, drawn, fixed
from ._stats import STATS

#: Payloads drawn by Hypothesis, of each kind, besides the fixed ones.
ENVELOPE, DOMAIN = 220, 50
OUTCOMES = ("applied", "gap", "old")


@contextlib.asynccontextmanager
async def events_aggregator(saga: Saga, broker: MosquittoBroker, prefix: str) -> AsyncIterator[Aggregator]:
    """An aggregator in events mode on ``prefix``, subscribed before it is yielded."""
    definition = load_definition().with_urls(saga.urls).with_settings(freshness="events")
    async with Aggregator(definition, broker=broker.url, prefix=prefix) as agg:
        assert agg.feed is not None
        async with asyncio.timeout(10):
            await agg.feed.up.wait()
        yield agg


async def _until(predicate: Any, timeout: float, what: Any) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting: {what() if callable(what) else what}") from None


def _check_invalid(hostile: Hostile, prefix: str) -> None:
    """The payload really is what its kind says, by the contract's own parser (total: InvalidEvent only)."""
    topic = hostile.topic(prefix)
    consumers = [frozenset(SPECS[name].handlers) for name in hostile.consumers()]
    if hostile.kind == "envelope":
        for accepted in [None, *consumers]:
            with pytest.raises(InvalidEvent):
                parse_event(topic, hostile.payload, prefix=prefix, accepted=accepted)
        return
    event = parse_event(topic, hostile.payload, prefix=prefix, accepted=None)
    with pytest.raises(ValidationError):
        Order.model_validate(event.domain)


def _outcomes(agg: Aggregator) -> dict[str, float]:
    return {o: agg.metrics.value("aggregator_events_total", outcome=o) for o in ("ignored", *OUTCOMES)}


def _link_tasks() -> dict[str, asyncio.Task[Any]]:
    names = {f"{name}-broker-link" for name in SPECS} | {"aggregator-event-feed"}
    return {t.get_name(): t for t in asyncio.all_tasks() if t.get_name() in names}


@pytest.mark.slow
async def test_hostile_payloads_change_nothing_but_the_counters(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Both sides survive ~300 hostile payloads, count them exactly, and the saga still works."""
    caplog.set_level(logging.WARNING)
    hostile = fixed() + drawn(envelope=ENVELOPE, domain=DOMAIN)
    for h in hostile:
        _check_invalid(h, prefix)
    kinds = Counter(h.kind for h in hostile)
    deadletters = Counter(name for h in hostile for name in h.consumers())
    assert set(deadletters) == set(SPECS)  # every participant gets its share

    async with events_aggregator(saga, session_broker, prefix) as agg:
        tasks = _link_tasks()
        assert set(tasks) == {f"{name}-broker-link" for name in SPECS} | {"aggregator-event-feed"}
        before = {name: await counts(saga.http, url) for name, url in saga.urls.items()}
        seen = _outcomes(agg)

        by_topic: dict[str, list[bytes]] = {}
        for h in hostile:
            by_topic.setdefault(h.topic(prefix), []).append(h.payload)
        await asyncio.gather(*(publish(session_broker.url, t, p) for t, p in by_topic.items()))
        STATS.payloads = len(hostile)

        async def deadlettered() -> dict[str, int]:
            now = {name: await counts(saga.http, url) for name, url in saga.urls.items()}
            return {name: now[name]["deadlettered"] - before[name]["deadlettered"] for name in SPECS}

        got: dict[str, int] = {}

        async def poll() -> None:
            while True:
                got.update(await deadlettered())
                if got == dict(deadletters):
                    return
                await asyncio.sleep(0.05)

        try:
            async with asyncio.timeout(30):
                await poll()
        except TimeoutError:
            raise AssertionError(f"dead letters {got} != expected {dict(deadletters)}") from None

        # Ours that are no event, and each participant's dead letter about one (never an event).
        ignored = kinds["envelope"] + sum(deadletters.values())

        def delta() -> dict[str, float]:
            now = _outcomes(agg)
            return {o: now[o] - seen[o] for o in now}

        await _until(
            lambda: delta()["ignored"] == ignored and sum(delta()[o] for o in OUTCOMES) == kinds["domain"],
            timeout=15,
            what=lambda: f"aggregator events {delta()} (expected ignored {ignored}, taken {kinds['domain']})",
        )
        await asyncio.sleep(0.3)  # and nothing more arrives
        assert delta()["ignored"] == ignored
        assert sum(delta()[o] for o in OUTCOMES) == kinds["domain"]
        assert await deadlettered() == dict(deadletters)

        # Both sides are still up, on their first connection.
        assert agg.feed is not None and agg.feed.healthy and agg.feed.outages == 0
        assert agg.metrics.value("aggregator_broker_connected") == 1
        for name, url in saga.urls.items():
            health = await counts(saga.http, url)
            assert health["connects"] == 1, name
            async with saga.http.get(f"{url}/readyz") as r:
                assert r.status == 200, (name, await r.text())
        assert {n: t.done() for n, t in _link_tasks().items()} == dict.fromkeys(tasks, False)

        # And the saga still works, seen by the participants and, from events, by the aggregator.
        wf = await saga.place("happy", order_id="fz-after-the-storm")
        await saga.wait_states(wf, SAMPLES["happy"].parts)
        views: list[str] = []

        async def completed() -> None:
            while True:
                view = await agg.view(wf)
                views.append(view.state)
                if view.state == SAMPLES["happy"].state:
                    return
                await asyncio.sleep(0.05)

        async with asyncio.timeout(10):
            await completed()
        assert agg.feed.healthy

    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("dead-lettering" in r.getMessage() for r in caplog.records)
