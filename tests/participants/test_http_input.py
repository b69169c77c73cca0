"""Bad HTTP input gets problem+json with the right status, and publishes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from order_saga.broker import MosquittoBroker

from ..support import Listener, Saga, order_body

GOOD = order_body("happy")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1,2]", 400, "JSON object"),
        (b'{"amount": 1}', 422, "currency"),
        ({**GOOD, "items": [{"sku": "A", "qty": -1}]}, 422, "items.0.qty"),
        ({**GOOD, "items": [{"sku": "A", "qty": 1.5}]}, 422, "items.0.qty"),
        ({**GOOD, "items": []}, 422, "items"),
        ({**GOOD, "amount": "12"}, 422, "amount"),
        ({**GOOD, "amount": 0}, 422, "amount"),
        ({**GOOD, "currency": "euro"}, 422, "currency"),
        ({**GOOD, "country": "France"}, 422, "country"),
        ({**GOOD, "order_id": "has space"}, 422, "order_id"),
        ({**GOOD, "order_id": "x" * 129}, 422, "order_id"),
        ({**GOOD, "surprise": True}, 422, "surprise"),
        (b"{" + b'"pad":"' + b"x" * (256 * 1024) + b'"}', 413, "Maximum request body size 65536 exceeded"),
    ],
)
async def test_invalid_order_is_rejected_with_problem_details_and_nothing_published(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, body: Any, status: int, needle: str
) -> None:
    """Each bad body gets its status as problem+json; no event reaches the broker."""
    async with Listener(session_broker.url, f"{prefix}/#") as heard:
        kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
        async with saga.http.post(f"{saga.urls['order']}/orders", **kwargs) as r:
            assert r.status == status
            assert r.content_type == "application/problem+json"
            problem = await r.json()
        await asyncio.sleep(0.3)
    assert problem["status"] == status
    assert needle in str(problem)
    assert heard.messages == []


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/status/bad%20id", 400),
        ("/status/trailing-newline%0A", 400),
        ("/status/" + "x" * 129, 400),
        ("/status/never-seen", 404),
        ("/status?workflow_id=ok&workflow_id=bad%20id", 400),
        ("/status", 400),
        ("/no/such/route", 404),
    ],
)
async def test_bad_status_requests_get_problem_details(saga: Saga, path: str, status: int) -> None:
    """Invalid ids, unknown ids and unknown routes are problem+json, never HTML or a traceback."""
    async with saga.http.get(f"{saga.urls['payment']}{path}") as r:
        assert r.status == status
        assert r.content_type == "application/problem+json"
        assert (await r.json())["status"] == status


async def test_method_not_allowed_is_problem_details(saga: Saga) -> None:
    """DELETE on /orders is 405 problem+json with an Allow header."""
    async with saga.http.delete(f"{saga.urls['order']}/orders") as r:
        assert r.status == 405
        assert r.content_type == "application/problem+json"
        assert "POST" in r.headers["Allow"]


async def test_too_many_batch_ids_is_a_400(saga: Saga) -> None:
    """A batch naming more than 1000 ids is refused rather than run."""
    query = "&".join(f"workflow_id=w{i}" for i in range(1001))
    async with saga.http.get(f"{saga.urls['payment']}/status?{query}") as r:
        assert r.status == 400
        assert "1000" in (await r.json())["detail"]


async def test_batch_status_lists_known_parts_and_missing_ids(saga: Saga) -> None:
    """The batch endpoint returns statuses in request order and the unknown ids under missing."""
    a = await saga.place("happy", order_id="batch-a")
    b = await saga.place("declined", order_id="batch-b")
    await saga.wait_states(a, {"payment": "AUTHORIZED"})
    await saga.wait_states(b, {"payment": "DECLINED"})
    async with saga.http.get(
        f"{saga.urls['payment']}/status?workflow_id={b}&workflow_id=nope&workflow_id={a}"
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert [s["workflow_id"] for s in body["statuses"]] == [b, a]
    assert [s["state"] for s in body["statuses"]] == ["DECLINED", "AUTHORIZED"]
    assert body["missing"] == ["nope"]


async def test_accepted_order_returns_location_of_its_status(saga: Saga) -> None:
    """202 with the workflow id and a Location that resolves to the order's status."""
    async with saga.http.post(f"{saga.urls['order']}/orders", json=GOOD) as r:
        assert r.status == 202
        workflow_id = (await r.json())["workflow_id"]
        location = r.headers["Location"]
    assert location == f"/status/{workflow_id}"
    async with saga.http.get(f"{saga.urls['order']}{location}") as r:
        assert r.status == 200
        assert (await r.json())["version"] >= 1


async def test_readyz_and_healthz_report_ready_participant(saga: Saga) -> None:
    """A connected participant is alive and ready."""
    async with saga.http.get(f"{saga.urls['shipping']}/readyz") as r:
        assert r.status == 200
        assert (await r.json())["checks"] == {"database": True, "broker": True}
    async with saga.http.get(f"{saga.urls['shipping']}/healthz") as r:
        assert r.status == 200
        assert (await r.json())["participant"] == "shipping"
