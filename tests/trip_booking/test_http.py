"""The services' HTTP: batch reads of trips, flights and payments, and bad input answered with a JSON
400 (never a 500 or a hang)."""

from __future__ import annotations

import asyncio
from typing import Any

from yarl import URL

from ._stack import OUTCOMES, Trip


async def test_batch_reads_of_trips_flights_and_payments(services: Trip) -> None:
    """Comma-joined (or, for trips, repeated) ids read many records in one call, in the order asked,
    unknown ids left out."""
    for outcome in ("ok", "declined", "no-flight"):
        await services.book(f"b-{outcome}", outcome)
    for outcome in ("ok", "declined", "no-flight"):
        await services.wait_states(f"b-{outcome}", OUTCOMES[outcome][1])
    ids = "b-no-flight,nobody,b-ok,b-declined,b-ok"
    status, trips = await services.get("trips", "/api/trips?id=b-ok&id=nobody&id=b-no-flight")
    assert status == 200
    assert [(t["id"], t["status"]) for t in trips["trips"]] == [
        ("b-ok", "CONFIRMED"),
        ("b-no-flight", "CANCELLED"),
    ]
    status, flights = await services.get("flights", f"/flights/bookings?trip={ids}")
    assert status == 200
    assert [(b["trip"], b["state"]) for b in flights["bookings"]] == [
        ("b-no-flight", "unavailable"),
        ("b-ok", "held"),
        ("b-declined", "released"),
    ]
    status, payments = await services.get("payments", f"/v2/payments?order_id={ids}")
    assert status == 200
    assert [(p["order_id"], p["status"]) for p in payments["items"]] == [
        ("b-ok", "captured"),
        ("b-declined", "declined"),
    ]
    many = ",".join(["b-ok", *(f"n{i}" for i in range(199))])
    assert await services.get("flights", f"/flights/bookings?trip={many}") == (
        200,
        {"bookings": flights["bookings"][1:2]},
    )
    assert (await services.get("payments", f"/v2/payments?order_id={many}"))[1]["items"] == payments["items"][
        :1
    ]
    assert await services.get("payments", "/v2/payments?order_id=nobody") == (200, {"items": []})
    assert await services.get("flights", "/flights/bookings?trip=b-ok%3Ax,b-ok") == (
        200,
        {"bookings": flights["bookings"][1:2]},
    )


GOOD = {"trip_id": "fine", "travellers": 1, "nights": 1, "amount": 1}
TOO_MANY = ",".join(f"i{i}" for i in range(201))
#: (service, method, path, body) answered with 400.
BAD: list[tuple[str, str, str, Any]] = [
    ("trips", "POST", "/trips", b"{not json"),
    ("trips", "POST", "/trips", b"\xff\xfe"),
    ("trips", "POST", "/trips", b""),
    ("trips", "POST", "/trips", b"[1, 2]"),
    ("trips", "POST", "/trips", b"[" * 50_000 + b"]" * 50_000),
    ("trips", "POST", "/trips", {**GOOD, "travellers": 0}),
    ("trips", "POST", "/trips", {**GOOD, "travellers": 51}),
    ("trips", "POST", "/trips", {**GOOD, "travellers": True}),
    ("trips", "POST", "/trips", {**GOOD, "travellers": 1.5}),
    ("trips", "POST", "/trips", {**GOOD, "travellers": "2"}),
    ("trips", "POST", "/trips", {**GOOD, "nights": 61}),
    ("trips", "POST", "/trips", {**GOOD, "nights": None}),
    ("trips", "POST", "/trips", {**GOOD, "amount": 0}),
    ("trips", "POST", "/trips", {**GOOD, "amount": -3}),
    ("trips", "POST", "/trips", {**GOOD, "amount": "12"}),
    ("trips", "POST", "/trips", b'{"travellers": 1, "nights": 1, "amount": NaN}'),
    ("trips", "POST", "/trips", b'{"travellers": 1, "nights": 1, "amount": Infinity}'),
    ("trips", "POST", "/trips", {k: v for k, v in GOOD.items() if k != "amount"}),
    ("trips", "POST", "/trips", {**GOOD, "trip_id": "has space"}),
    ("trips", "POST", "/trips", {**GOOD, "trip_id": "a/b"}),
    ("trips", "POST", "/trips", {**GOOD, "trip_id": ".."}),
    ("trips", "POST", "/trips", {**GOOD, "trip_id": "x" * 129}),
    ("trips", "POST", "/trips", {**GOOD, "trip_id": 12}),
    ("trips", "POST", "/trips", {**GOOD, "surprise": 1}),
    ("trips", "GET", "/api/trips/bad%20id", None),
    ("trips", "GET", "/api/trips/" + "x" * 129, None),
    ("flights", "GET", "/flights/bookings", None),
    ("flights", "GET", "/flights/bookings?trip=", None),
    ("flights", "GET", "/flights/bookings?trip=a,,b", None),
    ("flights", "GET", "/flights/bookings?trip=a%2Fb", None),
    ("flights", "GET", f"/flights/bookings?trip={TOO_MANY}", None),
    ("flights", "GET", "/flights/bookings?order_id=a", None),
    ("hotel", "GET", "/hotel/reservations/bad%20id", None),
    ("hotel", "GET", "/hotel/reservations/%2E%2E", None),
    ("hotel", "GET", "/hotel/reservations/x%0A", None),
    ("payments", "GET", "/v2/payments", None),
    ("payments", "GET", "/v2/payments?order_id=%00", None),
    ("payments", "GET", f"/v2/payments?order_id={TOO_MANY}", None),
]


async def test_bad_input_is_a_json_400(services: Trip) -> None:
    """Every malformed request gets a 400 with a JSON error, and books nothing."""
    wrong = []
    for name, method, path, body in BAD:
        kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
        async with (
            asyncio.timeout(5),
            services.http.request(method, URL(services.urls[name] + path, encoded=True), **kwargs) as r,
        ):
            answer = await r.json() if r.content_type == "application/json" else await r.text()
            if r.status != 400 or not isinstance(answer, dict) or not answer.get("error"):
                wrong.append((name, method, path[:60], r.status, str(answer)[:200]))
    assert wrong == []
    assert await services.get("flights", "/flights/bookings?trip=fine") == (200, {"bookings": []})
    assert (await services.get("trips", "/api/trips/fine"))[0] == 404


async def test_other_answers_are_json_too(services: Trip) -> None:
    """Unknown records and routes are JSON 404s, a known trip id a 409, a wrong method a 405; /healthz is 200."""
    await services.book("known")
    for name, path in [
        ("trips", "/api/trips/nobody"),
        ("hotel", "/hotel/reservations/nobody"),
        ("trips", "/nothing"),
    ]:
        status, body = await services.get(name, path)
        assert (status, bool(body["error"])) == (404, True)
    assert await services.get("trips", "/api/trips/nobody") == (404, {"error": "not found"})
    async with services.http.post(f"{services.urls['trips']}/trips", json={**GOOD, "trip_id": "known"}) as r:
        assert (r.status, await r.json()) == (409, {"error": "trip known exists"})
    async with services.http.delete(f"{services.urls['trips']}/trips") as r:
        assert r.status == 405 and r.headers["Allow"] == "POST" and (await r.json())["error"]
    async with services.http.post(
        f"{services.urls['trips']}/trips", data=b"{" + b" " * (2 << 20) + b"}"
    ) as r:
        assert r.status == 413 and (await r.json())["error"]
    for name in services.urls:
        status, body = await services.get(name, "/healthz")
        assert (status, body) == (200, {"service": name, "subscribed": True})
