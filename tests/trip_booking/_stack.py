"""Helpers of the trip booking tests: the four services in-process or as processes, and their
local states read through each service's own REST shape."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from contract import BrokerURL
from order_saga.broker import free_port
from trip_booking._kit import Service
from trip_booking.flights import Flights
from trip_booking.hotel import Hotel
from trip_booking.payments import Payments
from trip_booking.trips import Trips

KINDS: dict[str, type[Service]] = {"trips": Trips, "flights": Flights, "hotel": Hotel, "payments": Payments}

#: A trip request per outcome, and each service's final local state (None: no record).
OUTCOMES: dict[str, tuple[dict[str, Any], dict[str, str | None]]] = {
    "ok": (
        {"travellers": 2, "nights": 3, "amount": 420.5},
        {"trips": "CONFIRMED", "flights": "held", "hotel": "confirmed", "payments": "captured"},
    ),
    "no-flight": (
        {"travellers": 10, "nights": 3, "amount": 900},
        {"trips": "CANCELLED", "flights": "unavailable", "hotel": None, "payments": None},
    ),
    "no-room": (
        {"travellers": 2, "nights": 15, "amount": 900},
        {"trips": "CANCELLED", "flights": "released", "hotel": "no_vacancy", "payments": None},
    ),
    "declined": (
        {"travellers": 2, "nights": 3, "amount": 6000},
        {"trips": "CANCELLED", "flights": "released", "hotel": "cancelled", "payments": "declined"},
    ),
}


@dataclass
class Trip:
    """The four services' base URLs, and a client to talk to them."""

    urls: dict[str, str]
    http: aiohttp.ClientSession

    async def book(self, trip_id: str, outcome: str = "ok") -> None:
        body = {"trip_id": trip_id, **OUTCOMES[outcome][0]}
        async with self.http.post(f"{self.urls['trips']}/trips", json=body) as r:
            assert r.status == 201, await r.text()
            assert await r.json() == {"trip_id": trip_id, "status": "REQUESTED"}

    async def get(self, name: str, path: str) -> tuple[int, Any]:
        async with self.http.get(f"{self.urls[name]}{path}") as r:
            assert r.content_type == "application/json", await r.text()
            return r.status, await r.json()

    async def records(self, trip_id: str) -> dict[str, dict[str, Any] | None]:
        """Each service's record of ``trip_id``, read the way that service answers (None: no record)."""
        trip_status, trip = await self.get("trips", f"/api/trips/{trip_id}")
        hotel_status, hotel = await self.get("hotel", f"/hotel/reservations/{trip_id}")
        assert trip_status in (200, 404) and hotel_status in (200, 404), (trip, hotel)
        _, flights = await self.get("flights", f"/flights/bookings?trip={trip_id}")
        _, payments = await self.get("payments", f"/v2/payments?order_id={trip_id}")
        return {
            "trips": trip["trip"] if trip_status == 200 else None,
            "flights": flights["bookings"][0] if flights["bookings"] else None,
            "hotel": hotel["data"]["attributes"] if hotel_status == 200 else None,
            "payments": payments["items"][0] if payments["items"] else None,
        }

    async def states(self, trip_id: str) -> dict[str, str | None]:
        found = await self.records(trip_id)
        keys = {"trips": "status", "flights": "state", "hotel": "status", "payments": "status"}
        return {name: (record[keys[name]] if record else None) for name, record in found.items()}

    async def wait_states(
        self, trip_id: str, expected: Mapping[str, str | None], timeout: float = 10.0
    ) -> dict[str, dict[str, Any] | None]:
        """Poll until every service's local state of ``trip_id`` is ``expected``; return the records."""
        deadline = time.monotonic() + timeout
        while (states := await self.states(trip_id)) != dict(expected):
            if time.monotonic() > deadline:
                raise AssertionError(f"{trip_id}: {states} != {dict(expected)}")
            await asyncio.sleep(0.05)
        return await self.records(trip_id)


async def wait_subscribed(
    http: aiohttp.ClientSession, urls: Mapping[str, str], timeout: float = 15.0
) -> None:
    """Wait until every service answers ``/healthz`` and has subscribed to its topics."""
    deadline = time.monotonic() + timeout
    for name, url in urls.items():
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/healthz") as r:
                    if r.status == 200 and (await r.json())["subscribed"]:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} at {url} did not subscribe within {timeout}s")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def in_process(broker: BrokerURL, tmp: Path) -> AsyncIterator[Trip]:
    """The four services in this process on port 0, subscribed; always stopped."""
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for name, kind in KINDS.items():
            service = kind(db=tmp / f"{name}.sqlite3", broker=broker)
            urls[name] = await stack.enter_async_context(service.running())
        http = await stack.enter_async_context(aiohttp.ClientSession())
        await wait_subscribed(http, urls)
        yield Trip(urls=urls, http=http)


def serve_process(name: str, port: int, broker: BrokerURL, tmp: Path) -> subprocess.Popen[bytes]:
    """``python -m trip_booking serve NAME`` on ``port``, its database and log in ``tmp``."""
    with (tmp / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "trip_booking", "serve", name, "--port", str(port),
             "--broker", str(broker), "--db", str(tmp / f"{name}.sqlite3")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def as_processes(
    broker: BrokerURL, tmp: Path
) -> AsyncIterator[tuple[Trip, dict[str, subprocess.Popen[bytes]]]]:
    """The four services as ``python -m trip_booking serve NAME`` processes, subscribed; always stopped."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls = {}
    try:
        for name in KINDS:
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            procs[name] = serve_process(name, port, broker, tmp)
        async with aiohttp.ClientSession() as http:
            await wait_subscribed(http, urls)
            yield Trip(urls=urls, http=http), procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
