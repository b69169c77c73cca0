"""The airline: a seat held per trip, read in batches; no version, times in epoch seconds.

``GET /flights/bookings?trip=ID[,ID...]`` answers ``{"bookings": [{"trip", "state", "updated"}]}``;
each change goes out on ``airline/bookings`` as ``{"trip", "state", "ts"}``. A trip of more than
9 travellers finds no seats (``unavailable``); a held seat is ``released`` when the trip finds
no room or its payment is declined.
"""

from __future__ import annotations

import time

from aiohttp import web

from ._kit import Doc, Service, field, ids_param, trip_id

TOPIC = "airline/bookings"
MAX_SEATS = 9


class Flights(Service):
    name = "flights"
    topics = ("trips/events", "hotel/events/+", "payments/+/events")

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/flights/bookings", self.bookings)

    async def bookings(self, request: web.Request) -> web.Response:
        return web.json_response({"bookings": self.store.get_many("booking", ids_param(request, "trip"))})

    def handle(self, topic: str, event: Doc) -> None:
        if topic == "trips/events":
            if field(event, "trip.status", str) != "REQUESTED":
                return
            key, travellers = trip_id(event, "trip.id"), field(event, "trip.travellers", int)
            if self.store.get("booking", key) is None:
                self._set(key, "unavailable" if travellers > MAX_SEATS else "held", after=0.0)
            return
        if topic == "hotel/events/+":
            key, failed = (
                trip_id(event, "data.id"),
                field(event, "data.attributes.status", str) == "no_vacancy",
            )
        else:
            key, failed = trip_id(event, "order_id"), field(event, "status", str) == "declined"
        booking = self.store.get("booking", key)
        if failed and booking is not None and booking["state"] == "held":
            self._set(key, "released", after=booking["updated"])

    def _set(self, key: str, state: str, *, after: float) -> None:
        # No version: readers order a booking's changes by this time, so it never goes back.
        ts = max(round(time.time(), 6), round(after + 0.001, 6))
        booking = {"trip": key, "state": state, "updated": ts}
        self.store.put("booking", key, booking, event=(TOPIC, {"trip": key, "state": state, "ts": ts}))
