"""Mapped participants on real servers: services with their own REST shapes, read through trip_booking/trip.toml.

One aiohttp server plays the four services of the trip example (each on its own paths, with
its own JSON), from a table of records the tests change; the aggregator reads it over HTTP as
it would read the real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aggregator import Aggregator, _scans, api
from aggregator._http1 import Http1Pool
from aggregator._mapped import client_for
from aggregator.definition import Definition, load_definition, parse_definition
from aggregator.errors import PartFailure
from aggregator.web import create_app
from contract import serve_app

from ..support import cli

TRIP_TOML = Path(__file__).resolve().parents[2] / "trip_booking" / "trip.toml"


@dataclass
class Services:
    """The four services' records by trip id, and the calls each path got."""

    url: str = ""
    trips: dict[str, dict[str, Any]] = field(default_factory=dict)
    flights: dict[str, dict[str, Any]] = field(default_factory=dict)
    hotel: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    delay_s: float = 0.0

    def book(self, trip: str, *, hotel_status: str = "confirmed", flight_state: str = "held") -> None:
        now = time.time()
        self.trips[trip] = {"id": trip, "status": "CONFIRMED", "rev": 3, "modified": "2026-12-06T07:00:00Z"}
        self.flights[trip] = {"trip": trip, "state": flight_state, "updated": now - 3}
        self.hotel[trip] = {
            "status": hotel_status,
            "version": 2,
            "updatedAt": "2026-12-06T08:00:01+01:00",
            "room": "d-2",
        }
        self.payments[trip] = {
            "order_id": trip,
            "status": "captured",
            "revision": 2,
            "updated": int(now * 1000),
            "amount": 120,
        }

    def app(self) -> web.Application:
        async def trips(request: web.Request) -> web.Response:
            self.calls["trips"] += 1
            await asyncio.sleep(self.delay_s)
            record = self.trips.get(request.match_info["id"])
            if record is None:
                return web.json_response({"error": "not found"}, status=404)
            return web.json_response({"trip": record})

        async def trips_many(request: web.Request) -> web.Response:
            self.calls["trips"] += 1
            self.calls[f"trips-ids-{len(request.query.getall('id'))}"] += 1
            await asyncio.sleep(self.delay_s)
            return web.json_response(
                {"trips": [self.trips[t] for t in request.query.getall("id") if t in self.trips]}
            )

        async def flights(request: web.Request) -> web.Response:
            self.calls["flights"] += 1
            await asyncio.sleep(self.delay_s)
            ids = request.query.get("trip", "").split(",")
            return web.json_response({"bookings": [self.flights[t] for t in ids if t in self.flights]})

        async def hotel(request: web.Request) -> web.Response:
            self.calls["hotel"] += 1
            await asyncio.sleep(self.delay_s)
            trip = request.match_info["id"]
            record = self.hotel.get(trip)
            if record is None:
                raise web.HTTPNotFound()
            if record.get("shape") == "v2":  # the service renamed its field: status is now state
                attributes = {k: v for k, v in record.items() if k not in ("status", "shape")}
                attributes["state"] = record["status"]
                return web.json_response({"data": {"id": trip, "attributes": attributes}})
            return web.json_response({"data": {"type": "reservation", "id": trip, "attributes": record}})

        async def payments(request: web.Request) -> web.Response:
            self.calls["payments"] += 1
            await asyncio.sleep(self.delay_s)
            ids = request.query.get("order_id", "").split(",")
            self.calls[f"payments-ids-{len(ids)}"] += 1
            return web.json_response({"items": [self.payments[t] for t in ids if t in self.payments]})

        app = web.Application()
        app.add_routes(
            [
                web.get("/api/trips/{id}", trips),
                web.get("/api/trips", trips_many),
                web.get("/flights/bookings", flights),
                web.get("/hotel/reservations/{id}", hotel),
                web.get("/v2/payments", payments),
            ]
        )
        return app


def trip_definition(url: str, **settings: Any) -> Definition:
    definition = load_definition(TRIP_TOML).with_urls(
        {n: url for n in ("trips", "flights", "hotel", "payments")}
    )
    return definition.with_settings(**settings) if settings else definition


@contextlib.asynccontextmanager
async def served(services: Services, **settings: Any) -> AsyncIterator[tuple[Aggregator, str]]:
    async with serve_app(services.app()) as url:
        services.url = url
        async with Aggregator(trip_definition(url, **settings)) as agg, serve_app(create_app(agg)) as base:
            yield agg, base


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_view_of_services_with_their_own_shapes() -> None:
    """Each part is read through its mapping: nested states, epoch times, no version, data, all in one view."""
    services = Services()
    services.book("trip-1")
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        status, view = await get_json(http, f"{base}/workflows/trip-1")
    assert status == 200
    assert (view["state"], view["complete"], view["anomalies"]) == ("BOOKED", True, [])
    parts = view["parts"]
    assert {n: p["state"] for n, p in parts.items()} == {
        "trips": "CONFIRMED",
        "flights": "HELD",
        "hotel": "CONFIRMED",
        "payments": "CAPTURED",
    }
    assert (parts["trips"]["version"], parts["hotel"]["version"], parts["payments"]["version"]) == (3, 2, 2)
    assert parts["flights"]["version"] is None and "ordered" not in parts["flights"]  # ordered by its time
    assert parts["hotel"]["updated_at"] == "2026-12-06T07:00:01.000000Z"  # +01:00 converted to UTC
    assert parts["hotel"]["data"] == {"room": "d-2"} and parts["payments"]["data"] == {"amount": 120}
    assert "data" not in parts["trips"]
    assert all(p["source"] == "live" and p["error"] is None for p in parts.values())


async def test_a_workflow_no_service_knows_is_404_and_an_empty_list_is_no_record() -> None:
    """404 (trips, hotel) and an empty list (flights, payments) all mean "no record"."""
    services = Services()
    services.trips["trip-2"] = {
        "id": "trip-2",
        "status": "REQUESTED",
        "rev": 1,
        "modified": "2026-12-06T07:00:00Z",
    }
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        status, _ = await get_json(http, f"{base}/workflows/nobody")
        assert status == 404
        status, view = await get_json(http, f"{base}/workflows/trip-2")
    assert status == 200 and view["state"] == "BOOKING_FLIGHT" and view["complete"]
    for name in ("flights", "hotel", "payments"):
        assert view["parts"][name]["state"] is None and view["parts"][name]["error"] is None


async def test_an_unmapped_state_is_a_per_part_error_naming_the_value_and_the_circuit_stays_closed() -> None:
    """A raw state missing from the table: that part errs (unmapped_state, with the value), the view is 200."""
    services = Services()
    services.book("trip-3", hotel_status="overbooked")
    async with served(services) as (agg, base), aiohttp.ClientSession() as http:
        for _ in range(8):  # more than breaker_failures: an answer that does not map is still an answer
            status, view = await get_json(http, f"{base}/workflows/trip-3")
            assert status == 200
        assert agg.health().breakers["hotel"] == "closed"
    hotel = view["parts"]["hotel"]
    assert (hotel["state"], hotel["error"], view["complete"]) == (None, "unmapped_state", False)
    assert "'overbooked'" in hotel["detail"]
    assert view["parts"]["payments"]["error"] is None


async def test_a_service_that_changes_its_shape_shows_a_clear_per_part_error() -> None:
    """A record whose state moved elsewhere is a bad_response naming the selector, never a 500."""
    services = Services()
    services.book("trip-4")
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        status, first = await get_json(http, f"{base}/workflows/trip-4")
        assert first["parts"]["hotel"]["state"] == "CONFIRMED"
        services.hotel["trip-4"]["shape"] = "v2"
        status, view = await get_json(http, f"{base}/workflows/trip-4")
    assert status == 200
    hotel = view["parts"]["hotel"]
    assert hotel["error"] == "bad_response" and hotel["state"] is None
    assert hotel["detail"] == "state 'status' gave nothing, not a string or a number"


async def test_batch_mapping_asks_many_ids_in_one_call_and_single_calls_without_one() -> None:
    """GET /workflows?id=… asks batch-mapped services once; services without a batch mapping once per id."""
    services = Services()
    ids = [f"trip-b{i}" for i in range(7)]
    for trip in ids:
        services.book(trip)
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        query = "&".join(f"id={t}" for t in [*ids, "trip-none"])
        status, body = await get_json(http, f"{base}/workflows?{query}")
    assert status == 200
    assert [v["state"] for v in body["views"]] == ["BOOKED"] * 7 and body["not_found"] == ["trip-none"]
    assert services.calls["payments"] == 1 and services.calls["payments-ids-8"] == 1
    assert services.calls["flights"] == 1
    assert services.calls["trips"] == 1 and services.calls["trips-ids-8"] == 1  # id=a&id=b…
    assert services.calls["hotel"] == 8  # no batch mapping: one call per id


async def test_concurrent_cold_reads_share_batch_calls_of_batch_mapped_services() -> None:
    """Reads of distinct workflows at once go out together through the batch mapping (cross-request batching)."""
    services = Services(delay_s=0.02)
    ids = [f"trip-c{i}" for i in range(40)]
    for trip in ids:
        services.book(trip)
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        results = await asyncio.gather(*(get_json(http, f"{base}/workflows/{t}") for t in ids))
    assert all(status == 200 and view["state"] == "BOOKED" for status, view in results)
    assert services.calls["payments"] < len(ids) / 2  # batched
    assert services.calls["hotel"] == len(ids)  # no batch mapping: one call per read


async def test_min_version_of_a_participant_without_versions_is_refused() -> None:
    """min_version can name only participants whose parts carry a version."""
    services = Services()
    services.book("trip-5")
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        status, problem = await get_json(http, f"{base}/workflows/trip-5?min_version=flights:1")
        assert status == 400 and "flights:1" in problem["detail"]
        status, view = await get_json(http, f"{base}/workflows/trip-5?min_version=hotel:2")
        assert status == 200 and view["complete"]


async def test_listing_and_redrive_say_what_a_mapped_service_does_not_have() -> None:
    """Stalled listing needs the contract's listing (501); redrive skips mapped participants by name."""
    services = Services()
    services.book("trip-6")
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        status, problem = await get_json(http, f"{base}/workflows?stalled=true")
        assert status == 501 and problem["participant"] == "trips"
        async with http.post(f"{base}/workflows/trip-6/redrive") as resp:
            assert resp.status == 202
            report = await resp.json()
    assert set(report["participants"]) == {"trips", "flights", "hotel", "payments"}
    assert all("mapping" in r["skipped"] for r in report["participants"].values())


async def test_a_listing_a_mapped_initiator_lacks_is_refused_without_waiting_for_a_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every scan slot taken (none here), a stalled list, a fleet query and a summary over a
    mapped initiator are still its 501 at once, not a 429 after the wait for a slot."""
    monkeypatch.setattr(api, "MAX_PAGES", 0)  # as api.py builds its slots
    monkeypatch.setattr(api, "MAX_SUMMARIES", 0)
    monkeypatch.setattr(_scans, "WAIT_S", 5.0)
    services = Services()
    async with served(services) as (_, base), aiohttp.ClientSession() as http:
        for path in ("/workflows?stalled=true", "/workflows?state=BOOKED", "/summary"):
            started = time.monotonic()
            status, problem = await get_json(http, base + path)
            assert (status, problem["participant"]) == (501, "trips"), (path, problem)
            assert time.monotonic() - started < 2.0, path


async def test_an_unordered_participant_says_so_in_the_view(tmp_path: Path) -> None:
    """A mapping with neither version nor time: the part carries ordered: false and version null."""
    text = re.sub(r'\ntime = "updated" +# seconds since the epoch[^\n]*', "", TRIP_TOML.read_text())
    assert text != TRIP_TOML.read_text()
    path = tmp_path / "trip.toml"
    path.write_text(text)
    services = Services()
    services.book("trip-7")
    async with serve_app(services.app()) as url:
        definition = load_definition(path).with_urls(
            {n: url for n in ("trips", "flights", "hotel", "payments")}
        )
        async with Aggregator(definition) as agg:
            view = (await agg.view("trip-7")).to_json()
    flights = view["parts"]["flights"]
    assert flights["ordered"] is False and flights["version"] is None and flights["updated_at"] is None
    assert flights["state"] == "HELD"


async def test_headers_of_the_mapping_are_sent_with_environment_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "${NAME}" in a header value is taken from the environment; an unset one fails at construction."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Api-Key"))
        return web.json_response({"status": "AUTHORIZED"})

    text = """
name = "h"
[participants.pay]
url = "URL"
[participants.pay.status]
path = "/p/{id}"
headers = { X-Api-Key = "key-${PAY_KEY}" }
state = "status"
[[rules]]
state = "ANY"
"""
    from aggregator.definition import parse_definition
    from aggregator.errors import DefinitionError

    app = web.Application()
    app.router.add_get("/p/{id}", handler)
    async with serve_app(app) as url:
        definition = parse_definition(text.replace("URL", url))
        monkeypatch.delenv("PAY_KEY", raising=False)
        with pytest.raises(DefinitionError, match=r"\$\{PAY_KEY\}"):
            Aggregator(definition)
        monkeypatch.setenv("PAY_KEY", "s3cret")
        async with Aggregator(definition) as agg:
            view = await agg.view("w-1")
    assert seen == ["key-s3cret"]
    assert view.parts["pay"].state == "AUTHORIZED" and view.parts["pay"].to_json()["ordered"] is False


# -- check-participant -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def services_up(services: Services) -> AsyncIterator[list[str]]:
    """The services served; the check-participant arguments pointing the definition at them."""
    async with serve_app(services.app()) as url:
        overrides = [
            a for n in ("trips", "flights", "hotel", "payments") for a in ("--participant", f"{n}={url}")
        ]
        yield ["--config", str(TRIP_TOML), *overrides]


@pytest.mark.slow
async def test_check_participant_shows_request_answer_and_part_and_exits_0_when_clean() -> None:
    """A clean mapping: the request, the raw answer, the mapped part, the agreeing batch answer; exit 0."""
    services = Services()
    services.book("trip-8")
    async with services_up(services) as args:
        code, out = await cli("check-participant", "payments", "--id", "trip-8", *args)
        json_code, json_out = await cli("check-participant", "payments", "--id", "trip-8", "--json", *args)
    assert code == 0, out
    assert "/v2/payments?order_id=trip-8" in out and '"captured"' in out
    assert 'state "CAPTURED"' in out and "problems    none" in out
    report = json.loads(json_out)
    assert json_code == 0 and report["exit_status"] == 0
    assert report["part"]["state"] == "CAPTURED" and report["part"]["raw_state"] == "captured"
    assert report["batch"]["part"]["state"] == "CAPTURED" and report["problems"] == []


@pytest.mark.slow
async def test_check_participant_exits_1_on_every_mapping_problem() -> None:
    """An unmapped value, a bad time and no record are each reported, and exit 1."""
    services = Services()
    services.book("trip-9", hotel_status="overbooked")
    services.hotel["trip-9"]["updatedAt"] = "last tuesday"
    async with services_up(services) as args:
        code, out = await cli("check-participant", "hotel", "--id", "trip-9", "--json", *args)
        none_code, none_out = await cli("check-participant", "trips", "--id", "trip-none", *args)
    report = json.loads(out)
    assert code == 1
    assert [p["kind"] for p in report["problems"]] == ["unmapped_state", "bad_response"]
    assert "'overbooked'" in report["problems"][0]["detail"] and "RFC 3339" in report["problems"][1]["detail"]
    assert none_code == 1 and "no_record" in none_out


@pytest.mark.slow
async def test_check_participant_finds_a_batch_answer_that_disagrees(tmp_path: Path) -> None:
    """The batch endpoint answering another version than the single one is a problem (exit 1)."""

    async def handler(request: web.Request) -> web.Response:
        revision = 1 if "batch" in request.query else 2  # the batch endpoint lags behind
        ids = request.query["order_id"].split(",")
        return web.json_response(
            {
                "items": [
                    {"order_id": i, "status": "captured", "revision": revision, "updated": 1} for i in ids
                ]
            }
        )

    path = tmp_path / "trip.toml"
    path.write_text(
        TRIP_TOML.read_text().replace(
            'path = "/v2/payments?order_id={ids}"', 'path = "/v2/payments?batch=1&order_id={ids}"'
        )
    )
    app = web.Application()
    app.router.add_get("/v2/payments", handler)
    async with serve_app(app) as url:
        code, out = await cli(
            "check-participant",
            "payments",
            "--id",
            "trip-10",
            "--config",
            str(path),
            "--participant",
            f"payments={url}",
        )
    assert code == 1, out
    assert "disagrees" in out and "version 1, not 2" in out


@pytest.mark.slow
async def test_check_participant_exits_2_when_unreachable_or_misconfigured(tmp_path: Path) -> None:
    """Nothing listening, an unknown participant, a broken definition: exit 2 with one clear line."""
    from order_saga.broker import free_port

    port = free_port()
    code, out = await cli(
        "check-participant",
        "trips",
        "--id",
        "t",
        "--config",
        str(TRIP_TOML),
        "--participant",
        f"trips=http://127.0.0.1:{port}",
    )
    assert code == 2 and "unavailable" in out
    code, out = await cli("check-participant", "nobody", "--id", "t", "--config", str(TRIP_TOML))
    assert code == 2 and "no participant 'nobody'" in out and "Traceback" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text(TRIP_TOML.read_text().replace('state = "status"', 'state = "status[?"', 1))
    code, out = await cli("check-participant", "trips", "--id", "t", "--config", str(bad))
    assert code == 2 and "participants.trips.status.state" in out and "Traceback" not in out
    code, out = await cli("check-participant", "trips", "--id", "../x", "--config", str(TRIP_TOML))
    assert code == 2 and "not a workflow id" in out


@pytest.mark.slow
async def test_serve_with_auto_redrive_refuses_a_mapped_initiator() -> None:
    """--redrive auto needs the initiator's listing: a mapped initiator is a configuration error (exit 2)."""
    code, out = await cli("serve", "--config", str(TRIP_TOML), "--redrive", "auto", "--port", "0")
    assert code == 2 and "trips is read through a mapping" in out and "Traceback" not in out


@pytest.mark.slow
async def test_check_participant_reads_a_contract_participant_too() -> None:
    """Without a mapping, the contract's status body and batch endpoint are asked and compared."""
    from ..support import foreign_server, status_body

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/status":
            return web.json_response({"statuses": [status_body("ord-1", "AUTHORIZED", 2)], "missing": []})
        return web.json_response(status_body("ord-1", "AUTHORIZED", 2))

    async with foreign_server(handler) as url:
        code, out = await cli(
            "check-participant", "payment", "--id", "ord-1", "--participant", f"payment={url}", "--json"
        )
    report = json.loads(out)
    assert code == 0, out
    assert report["mapped"] is False and report["request"]["url"] == f"{url}/status/ord-1"
    assert report["part"] == {
        "state": "AUTHORIZED",
        "version": 2,
        "updated_at": "2026-11-25T12:00:00.000000Z",
    }
    assert report["batch"]["part"]["version"] == 2


async def test_a_mapped_call_reads_2xx_and_its_not_found_statuses_and_refuses_the_others() -> None:
    """With not_found = [404, 410], a 410 is no record, as a 404; a 203 is an answer, read through
    the mapping; a 409 is a bad_response."""
    answers = {"t-410": 410, "t-404": 404, "t-203": 203, "t-409": 409}

    async def hotel(request: web.Request) -> web.Response:
        trip = request.match_info["id"]
        attributes = {"status": "confirmed", "version": 2, "updatedAt": "2026-12-06T07:00:00Z", "room": "d-2"}
        return web.json_response({"data": {"id": trip, "attributes": attributes}}, status=answers[trip])

    app = web.Application()
    app.router.add_get("/hotel/reservations/{id}", hotel)
    text = TRIP_TOML.read_text().replace(
        'path = "/hotel/reservations/{id}"', 'path = "/hotel/reservations/{id}"\nnot_found = [404, 410]'
    )
    pool = Http1Pool()
    async with serve_app(app) as url:
        spec = parse_definition(text).with_urls({"hotel": url}).participants["hotel"]
        client = client_for("hotel", spec, transport=pool, max_bytes=1 << 20, token=None)
        try:
            assert (await client.fetch("t-410")).state is None
            assert (await client.fetch("t-404")).state is None
            part = await client.fetch("t-203")
            assert (part.state, part.version, part.data) == ("CONFIRMED", 2, {"room": "d-2"})
            with pytest.raises(PartFailure) as caught:
                await client.fetch("t-409")
        finally:
            await pool.aclose()
    assert (caught.value.kind, caught.value.detail) == ("bad_response", "HTTP 409")
