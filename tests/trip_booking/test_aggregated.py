"""The trip example as the aggregator sees it: four services with their own shapes, read through trip.toml.

Real services on a real Mosquitto; the aggregator reads them over HTTP through their mappings,
and in ``events`` mode from their own JSON events on their own topics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from aggregator import Aggregator
from aggregator.definition import Definition, load_definition
from aggregator.view import View
from order_saga.broker import MosquittoBroker

from ..support import cli
from ._stack import OUTCOMES, Trip

TRIP_TOML = Path(str(resources.files("trip_booking").joinpath("trip.toml")))
TRIP_TEXT = TRIP_TOML.read_text()
#: The overall state each outcome ends in.
FINAL = {"ok": "BOOKED", "no-flight": "CANCELLED", "no-room": "CANCELLED", "declined": "CANCELLED"}
#: Each outcome's final parts, as the definition's declared states (None: no record).
DECLARED = {
    outcome: {name: (None if raw is None else raw.upper()) for name, raw in states.items()}
    for outcome, (_, states) in OUTCOMES.items()
}


def definition_for(services: Trip, **settings: Any) -> Definition:
    definition = load_definition(TRIP_TOML).with_urls(services.urls)
    return definition.with_settings(**settings) if settings else definition


async def settled(agg: Aggregator, trip_id: str, state: str, timeout: float = 15.0) -> View:
    """The view once it is ``state`` and complete."""
    found: list[View] = []

    async def check() -> bool:
        view = await agg.view(trip_id)
        found.append(view)
        return view.state == state and view.complete

    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
    return found[-1]


@pytest.fixture
async def on_demand(services: Trip) -> AsyncIterator[Aggregator]:
    async with Aggregator(definition_for(services)) as agg:
        yield agg


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
async def test_every_outcome_is_reconstructed_from_the_services_own_apis(
    services: Trip, on_demand: Aggregator, outcome: str
) -> None:
    """Each outcome's view: its overall state, and every part as its service holds it, mapped."""
    trip_id = f"trip-{outcome}"
    await services.book(trip_id, outcome)
    view = await settled(on_demand, trip_id, FINAL[outcome])
    assert {n: p.state for n, p in view.parts.items()} == DECLARED[outcome]
    assert not view.stalled and view.anomalies == []
    records = await services.records(trip_id)
    body = view.to_json()
    trips = records["trips"]
    assert trips is not None and body["parts"]["trips"]["version"] == trips["rev"]
    if records["flights"] is not None:
        assert body["parts"]["flights"]["version"] is None  # flights keep no version: ordered by time
    if records["hotel"] is not None:
        assert body["parts"]["hotel"]["version"] == records["hotel"]["version"]
        assert body["parts"]["hotel"].get("data") == {"room": records["hotel"]["room"]}


async def test_a_batch_read_asks_the_batch_mapped_services_once(
    services: Trip, on_demand: Aggregator
) -> None:
    """GET /workflows?id=… of all four outcomes: every view right, and an unknown id not found."""
    ids = {f"trip-b-{outcome}": outcome for outcome in OUTCOMES}
    for trip_id, outcome in ids.items():
        await services.book(trip_id, outcome)
    for trip_id, outcome in ids.items():
        await settled(on_demand, trip_id, FINAL[outcome])
    calls = on_demand.metrics.calls  # participant calls by participant and outcome
    names = ("trips", "flights", "payments", "hotel")
    before = {n: calls.labels(n, "ok")._value.get() for n in names}
    views, not_found = await on_demand.views([*ids, "trip-nobody"])
    assert not_found == ["trip-nobody"]
    assert {v.workflow_id: v.state for v in views} == {t: FINAL[o] for t, o in ids.items()}
    after = {n: calls.labels(n, "ok")._value.get() for n in names}
    assert all(after[n] - before[n] == 1 for n in ("trips", "flights", "payments"))
    assert after["hotel"] - before["hotel"] == 1  # one guarded call: its single requests inside it


@pytest.mark.slow
async def test_events_mode_follows_the_services_own_events_without_asking_them(
    services: Trip, own_broker: MosquittoBroker
) -> None:
    """In events mode, every outcome ends right from the services' own JSON events; reads make no calls."""
    definition = definition_for(services, freshness="events")
    async with Aggregator(definition, broker=own_broker.url) as agg:
        assert agg.feed is not None
        async with asyncio.timeout(10):
            await agg.feed.up.wait()
        for outcome in OUTCOMES:
            await services.book(f"trip-e-{outcome}", outcome)
        views = {o: await settled(agg, f"trip-e-{o}", FINAL[o]) for o in OUTCOMES}
        for outcome, view in views.items():
            assert {n: p.state for n, p in view.parts.items()} == DECLARED[outcome]
        calls = agg.metrics.calls

        def total() -> float:
            return sum(calls.labels(n, "ok")._value.get() for n in definition.participants)

        before = total()
        for _ in range(10):
            for outcome in OUTCOMES:
                view = await agg.view(f"trip-e-{outcome}")
                assert all(p.source in ("event", "cache") for p in view.parts.values()), view.to_json()
        assert total() == before  # 40 reads, no participant asked
        events = agg.metrics.events
        assert events.labels("applied")._value.get() >= 12  # every state change of the four trips
        assert events.labels("unmapped")._value.get() == 0


async def test_an_unmapped_value_of_a_real_service_is_a_per_part_error(
    services: Trip, tmp_path: Path
) -> None:
    """A definition whose table misses a value the service uses: that part errs, naming it; the view is 200."""
    path = tmp_path / "trip.toml"
    path.write_text(TRIP_TEXT.replace('released = "RELEASED"\n', "", 1))
    async with Aggregator(load_definition(path).with_urls(services.urls)) as agg:
        await services.book("trip-u", "no-room")
        await services.wait_states("trip-u", OUTCOMES["no-room"][1])
        view = await agg.view("trip-u")
    flights = view.to_json()["parts"]["flights"]
    assert (flights["error"], flights["state"]) == ("unmapped_state", None)
    assert "'released'" in flights["detail"]
    assert not view.complete and view.parts["hotel"].state == "NO_VACANCY"


async def test_a_mapping_that_no_longer_fits_the_shape_is_a_per_part_error(
    services: Trip, tmp_path: Path
) -> None:
    """The service's state is no longer where the mapping looks: bad_response with the selector, never a 500."""
    path = tmp_path / "trip.toml"
    path.write_text(
        TRIP_TEXT.replace('state = "status"\nversion = "version"', 'state = "state"\nversion = "version"', 1)
    )
    async with Aggregator(load_definition(path).with_urls(services.urls)) as agg:
        await services.book("trip-s", "ok")
        await services.wait_states("trip-s", OUTCOMES["ok"][1])
        view = await agg.view("trip-s")
    hotel = view.to_json()["parts"]["hotel"]
    assert (
        hotel["error"] == "bad_response"
        and hotel["detail"] == "state 'state' gave nothing, not a string or a number"
    )
    assert view.state == "BOOKED"  # the other parts still derive the overall state


@pytest.mark.slow
async def test_check_participant_against_the_real_services(services: Trip) -> None:
    """check-participant asks each real service as the aggregator would: clean, batch agreeing, exit 0."""
    await services.book("trip-c", "declined")
    await services.wait_states("trip-c", OUTCOMES["declined"][1])
    overrides = [a for n, url in services.urls.items() for a in ("--participant", f"{n}={url}")]
    for name, state in DECLARED["declined"].items():
        code, out = await cli(
            "check-participant", name, "--id", "trip-c", "--config", str(TRIP_TOML), "--json", *overrides
        )
        report = json.loads(out)
        assert code == 0, out
        assert report["part"]["state"] == state and report["problems"] == []
        if name in ("flights", "payments"):
            assert report["batch"]["part"]["state"] == state


async def test_the_timeline_merges_the_current_states_of_mapped_services(
    services: Trip, on_demand: Aggregator
) -> None:
    """A mapped service has no history endpoint: its current state is its one entry in the timeline."""
    await services.book("trip-t", "ok")
    await settled(on_demand, "trip-t", "BOOKED")
    timeline = await on_demand.timeline("trip-t")
    assert timeline["errors"] == {}
    assert {(e["participant"], e["state"]) for e in timeline["entries"]} == {
        ("trips", "CONFIRMED"),
        ("flights", "HELD"),
        ("hotel", "CONFIRMED"),
        ("payments", "CAPTURED"),
    }
