"""An event is applied at most once, and re-posting an order starts nothing new."""

from __future__ import annotations

import json

from contract import new_event
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import Listener, Saga, order_body, publish


async def test_same_event_delivered_twice_is_applied_once(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Payment sees one order.created id three times; it authorizes once and publishes once."""
    event = new_event(
        source="order",
        name="created",
        subject="dup-1",
        state="PENDING",
        version=1,
        domain={k: v for k, v in order_body("happy").items()},
    )
    async with Listener(session_broker.url, f"{prefix}/payment/#") as heard:
        await publish(session_broker.url, f"{prefix}/order/created", [event.to_json()] * 3)
        await saga.wait_states(
            "dup-1", {"payment": "AUTHORIZED", "inventory": "RESERVED", "shipping": "SCHEDULED"}
        )
        await heard.wait_for(lambda h: len(h.on(f"{prefix}/payment/authorized")) >= 1)
        async with saga.http.get(f"{saga.urls['payment']}/healthz") as r:
            counts = (await r.json())["counts"]
    status = await saga.status("payment", "dup-1")
    assert status is not None
    assert status["version"] == 1
    assert [h["state"] for h in status["history"]] == ["AUTHORIZED"]
    assert counts["applied"] == 1
    assert counts["duplicates"] == 2
    authorized = [json.loads(p) for p in heard.on(f"{prefix}/payment/authorized")]
    assert len(authorized) == 1
    assert authorized[0]["subject"] == "dup-1" and authorized[0]["data"]["version"] == 1


async def test_reposting_an_order_id_starts_no_second_saga(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """The same order_id posted three times: one order.created, one saga, same workflow id."""
    async with Listener(session_broker.url, f"{prefix}/order/created") as heard:
        ids = [await saga.place("happy", order_id="repost-1") for _ in range(3)]
        got = await saga.wait_states("repost-1", SAMPLES["happy"].parts)
        assert await saga.place("happy", order_id="repost-1") == "repost-1"
    assert ids == ["repost-1"] * 3
    assert len(heard.on(f"{prefix}/order/created")) == 1
    assert got["order"] is not None and [h["version"] for h in got["order"]["history"]] == [1, 2]
    assert got["payment"] is not None and got["payment"]["version"] == 1


async def test_reposting_an_order_id_with_another_body_is_a_conflict(saga: Saga) -> None:
    """A different body under an existing order_id is refused with 409 problem+json."""
    await saga.place("happy", order_id="conflict-1")
    async with saga.http.post(f"{saga.urls['order']}/orders", json=order_body("declined", "conflict-1")) as r:
        assert r.status == 409
        assert r.content_type == "application/problem+json"
        assert (await r.json())["workflow_id"] == "conflict-1"
