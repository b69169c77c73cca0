"""Each outcome of a trip ends in the right local state at every service, read through that
service's own REST shape, with versions and times of the service's own kinds."""

from __future__ import annotations

import re
import time

import pytest

from ._stack import OUTCOMES, Trip

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
#: Each service's version after the outcome: trips' rev, hotel's version, payments' revision.
VERSIONS = {
    "ok": {"trips": 2, "hotel": 1, "payments": 1},
    "no-flight": {"trips": 2, "hotel": None, "payments": None},
    "no-room": {"trips": 2, "hotel": 1, "payments": None},
    "declined": {"trips": 2, "hotel": 2, "payments": 1},
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_outcome_reaches_its_final_local_states(services: Trip, outcome: str) -> None:
    """A trip booked for an outcome ends with each service in that outcome's local state."""
    started = time.time()
    request, expected = OUTCOMES[outcome]
    await services.book(f"trip-{outcome}", outcome)
    found = await services.wait_states(f"trip-{outcome}", expected)
    trip, flight, hotel, payment = found["trips"], found["flights"], found["hotel"], found["payments"]
    assert trip is not None and flight is not None
    assert trip == trip | {"id": f"trip-{outcome}", "rev": VERSIONS[outcome]["trips"], **request}
    assert RFC3339.match(trip["modified"])
    assert flight["trip"] == f"trip-{outcome}"
    assert isinstance(flight["updated"], float) and started - 1 < flight["updated"] < time.time() + 1
    if hotel is not None:
        assert hotel["version"] == VERSIONS[outcome]["hotel"] and RFC3339.match(hotel["updatedAt"])
        assert hotel["room"].startswith("double-") if outcome != "no-room" else hotel["room"] == ""
    if payment is not None:
        assert payment == payment | {
            "order_id": f"trip-{outcome}",
            "revision": 1,
            "amount": request["amount"],
        }
        assert isinstance(payment["updated"], int) and (started - 1) * 1000 < payment["updated"]


async def test_outcomes_side_by_side(services: Trip) -> None:
    """Trips of every outcome booked at once each end in their own outcome's states."""
    for outcome in OUTCOMES:
        await services.book(f"many-{outcome}", outcome)
    for outcome, (_, expected) in OUTCOMES.items():
        await services.wait_states(f"many-{outcome}", expected)
    _, reservation = await services.get("hotel", "/hotel/reservations/many-declined")
    assert reservation["data"]["type"] == "reservation" and reservation["data"]["id"] == "many-declined"


async def test_generated_trip_id(services: Trip) -> None:
    """A trip booked without an id gets one, and goes through like any other."""
    async with services.http.post(f"{services.urls['trips']}/trips", json=OUTCOMES["ok"][0]) as r:
        assert r.status == 201
        body = await r.json()
    assert body["status"] == "REQUESTED" and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", body["trip_id"])
    await services.wait_states(body["trip_id"], OUTCOMES["ok"][1])
