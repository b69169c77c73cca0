"""Malformed MQTT payloads are dead-lettered with a reason, acknowledged, and never stop the service."""

from __future__ import annotations

import json

import pytest

from contract import new_event
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import Listener, Saga, order_body, publish


def _valid(subject: str) -> dict[str, object]:
    return json.loads(
        new_event(
            source="order",
            name="created",
            subject=subject,
            state="PENDING",
            version=1,
            domain=order_body("happy"),
        ).to_json()
    )


BAD: dict[str, tuple[bytes, str]] = {
    "not_json": (b"{this is not json", "not JSON"),
    "not_utf8": (b"\xff\xfe\x00garbage", "not UTF-8"),
    "json_array": (b"[1, 2, 3]", "not an object"),
    "missing_fields": (json.dumps({"specversion": "1.0", "id": "x"}).encode(), "not a valid CloudEvent"),
    "wrong_types": (
        json.dumps({**_valid("w-1"), "data": {"state": "PENDING", "version": "1"}}).encode(),
        "data.version",
    ),
    "bad_subject": (json.dumps({**_valid("w-2"), "subject": "has spaces/and slashes"}).encode(), "subject"),
    "unknown_type": (json.dumps({**_valid("w-3"), "type": "order.exploded"}).encode(), "unknown event type"),
    "spoofed_source": (json.dumps({**_valid("w-4"), "source": "shipping"}).encode(), "does not match topic"),
    "missing_order_fields": (
        json.dumps({**_valid("w-5"), "data": {"state": "PENDING", "version": 1}}).encode(),
        "lacks valid order fields",
    ),
    "very_large": (b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', "exceeds"),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_malformed_payload_is_deadlettered_with_reason_and_service_keeps_serving(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, case: str
) -> None:
    """The bad payload lands on {prefix}/deadletter/order; a valid order right after still completes."""
    payload, reason = BAD[case]
    topic = f"{prefix}/deadletter/order"
    async with Listener(session_broker.url, f"{prefix}/deadletter/#") as heard:
        await publish(session_broker.url, f"{prefix}/order/created", [payload])
        await heard.wait_for(lambda h: len(h.on(topic)) >= 1)
        wf = await saga.place("happy")
        await saga.wait_states(wf, SAMPLES["happy"].parts)
    letters = [json.loads(p) for p in heard.on(topic)]
    assert len(letters) == 1, letters
    letter = letters[0]
    assert reason in letter["reason"]
    assert letter["consumer"] == "payment"
    assert letter["topic"] == f"{prefix}/order/created"
    assert letter["size"] == len(payload)
    assert letter["truncated"] is (len(payload) > 4096)
    async with saga.http.get(f"{saga.urls['payment']}/healthz") as r:
        counts = (await r.json())["counts"]
    assert counts["deadlettered"] == 1
    assert counts["applied"] == 1  # only the valid order's event
    for subject in ("w-1", "w-2", "w-3", "w-4", "w-5"):
        assert await saga.status("payment", subject) is None


async def test_payload_that_is_not_utf8_is_kept_as_base64(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Binary garbage is preserved byte for byte in the dead letter."""
    async with Listener(session_broker.url, f"{prefix}/deadletter/#") as heard:
        await publish(session_broker.url, f"{prefix}/order/created", [BAD["not_utf8"][0]])
        await heard.wait_for(lambda h: len(h.messages) >= 1)
    letter = json.loads(heard.messages[0][1])
    assert letter["payload"] is None
    import base64

    assert base64.b64decode(letter["payload_base64"]) == BAD["not_utf8"][0]
