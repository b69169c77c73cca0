"""The services' events: malformed payloads are ignored without harm, and an event delivered
again changes nothing."""

from __future__ import annotations

import json

from order_saga.broker import MosquittoBroker

from ..support import Listener, publish
from ._stack import OUTCOMES, Trip

JUNK = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2]",
    b"null",
    b'"text"',
    b"{}",
    b"[" * 20_000 + b"]" * 20_000,
    b'{"pad": "' + b"x" * 100_000 + b'"}',
]

#: Events that are JSON objects of about the right shape, but wrong: each names an id "g-..."
#: that must never get a record anywhere.
WRONG: dict[str, list[object]] = {
    "trips/events": [
        {"trip": 1},
        {"trip": {"id": "g-1", "status": "REQUESTED", "travellers": "2", "nights": 3, "amount": 10}},
        {"trip": {"id": "g-2", "status": "REQUESTED", "travellers": True, "nights": 3, "amount": 10}},
        {"trip": {"id": "g/+", "status": "REQUESTED", "travellers": 1, "nights": 3, "amount": 10}},
        {"trip": {"id": "g-3", "status": ["REQUESTED"], "travellers": 1, "nights": 3, "amount": 10}},
        {"trip": {"id": 4, "status": "REQUESTED", "travellers": 1, "nights": 3, "amount": 10}},
    ],
    "airline/bookings": [{"trip": "g-5", "state": 5}, {"trip": ["g-5"], "state": "held"}, {"state": "held"}],
    "hotel/events/g-6": [
        {"data": {"id": "g-6", "attributes": "confirmed"}},
        {"data": {"id": None, "attributes": {"status": "confirmed"}}},
        {"data": []},
    ],
    "payments/g-7/events": [{"order_id": 7, "status": "captured"}, {"order_id": "g-7", "status": None}],
}
NAN_AMOUNT = b'{"trip": {"id": "g-8", "status": "REQUESTED", "travellers": 1, "nights": 3, "amount": NaN}}'


async def test_malformed_events_leave_the_services_working(
    services: Trip, own_broker: MosquittoBroker
) -> None:
    """Junk and wrongly typed events on every subscribed topic are ignored; valid trips then complete."""
    async with Listener(own_broker.url, "#") as heard:
        for topic in WRONG:
            await publish(own_broker.url, topic, [*JUNK, *(json.dumps(e).encode() for e in WRONG[topic])])
        await publish(own_broker.url, "trips/events", [NAN_AMOUNT])
        await services.book("after-ok", "ok")
        await services.book("after-declined", "declined")
        await services.wait_states("after-ok", OUTCOMES["ok"][1])
        await services.wait_states("after-declined", OUTCOMES["declined"][1])
    for i in range(1, 9):
        assert await services.states(f"g-{i}") == dict.fromkeys(OUTCOMES["ok"][1])
    sent = sum(len(JUNK) + len(events) for events in WRONG.values()) + 1
    # The services published the two trips' events only: ok has 2 of trips and 1 of each other
    # service, declined 2 of trips, 2 of flights, 2 of hotel and 1 of payments.
    assert len(heard.messages) == sent + 5 + 7
    assert all(b'"g-' not in payload for _, payload in heard.messages[sent:])
    for name in services.urls:
        assert await services.get(name, "/healthz") == (200, {"service": name, "subscribed": True})


async def test_redelivered_events_change_nothing(services: Trip, own_broker: MosquittoBroker) -> None:
    """Every event of finished trips, delivered twice more, changes no state, version or time, and publishes nothing."""
    async with Listener(own_broker.url, "#") as heard:
        for outcome in OUTCOMES:
            await services.book(f"r-{outcome}", outcome)
        for outcome, (_, expected) in OUTCOMES.items():
            await services.wait_states(f"r-{outcome}", expected)
        before = {outcome: await services.records(f"r-{outcome}") for outcome in OUTCOMES}
        events = list(heard.messages)
        for topic, payload in events:
            await publish(own_broker.url, topic, [payload, payload])
        # The events of a later trip reach every service after the copies: once it has
        # completed, every copy has been handled.
        await services.book("r-later", "declined")
        await services.wait_states("r-later", OUTCOMES["declined"][1])
    assert {outcome: await services.records(f"r-{outcome}") for outcome in OUTCOMES} == before
    after = [m for m in heard.messages[len(events) :] if b'"r-later"' not in m[1]]
    assert after == [m for m in events for _ in range(2)]  # the copies only: no service answered them


async def test_services_outlast_a_broker_restart(services: Trip, own_broker: MosquittoBroker) -> None:
    """A trip booked while the broker is down goes through once it is back (the services reconnect)."""
    await services.book("before", "ok")
    await services.wait_states("before", OUTCOMES["ok"][1])
    own_broker.stop()
    await services.book("while-down", "declined")
    own_broker.start()
    await services.wait_states("while-down", OUTCOMES["declined"][1], timeout=20)
