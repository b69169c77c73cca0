"""The trip service, the initiator: ``POST /trips`` books a trip, ``GET /api/trips/{id}`` reads it,
``GET /api/trips?id=a&id=b`` reads several.

A trip is REQUESTED, then CONFIRMED when its payment is captured, or CANCELLED when no flight,
no room or no payment could be had. Every change goes out on ``trips/events`` as
``{"trip": {...}}``, with a revision (``rev``) and an RFC 3339 time (``modified``).
"""

from __future__ import annotations

import uuid

from aiohttp import web

from contract import is_valid_workflow_id, utc_now

from ._kit import Doc, Malformed, Service, field, ids_param, json_body, trip_id

TOPIC = "trips/events"
FIELDS = {"trip_id", "travellers", "nights", "amount"}


def _bounded(body: Doc, key: str, high: int) -> int:
    value: int = field(body, key, int)
    if not 1 <= value <= high:
        raise Malformed(f"{key} must be from 1 to {high}")
    return value


class Trips(Service):
    name = "trips"
    topics = ("airline/bookings", "hotel/events/+", "payments/+/events")

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/trips", self.book)
        router.add_get("/api/trips/{id}", self.read)
        router.add_get("/api/trips", self.read_many)

    async def book(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if unknown := sorted(set(body) - FIELDS):
            raise Malformed(f"unknown field(s): {', '.join(unknown)[:200]}")
        key = trip_id(body, "trip_id") if "trip_id" in body else f"trip-{uuid.uuid4().hex[:16]}"
        travellers, nights = _bounded(body, "travellers", 50), _bounded(body, "nights", 60)
        amount = field(body, "amount", (int, float))
        if amount <= 0:
            raise Malformed("amount must be above 0")
        trip = {"id": key, "status": "REQUESTED", "rev": 1, "modified": utc_now()}
        trip |= {"travellers": travellers, "nights": nights, "amount": amount}
        if not self.store.put("trip", key, trip, event=(TOPIC, {"trip": trip}), new=True):
            return web.json_response({"error": f"trip {key} exists"}, status=409)
        return web.json_response({"trip_id": key, "status": "REQUESTED"}, status=201)

    async def read(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        if not is_valid_workflow_id(key):
            raise Malformed("not a trip id ([A-Za-z0-9._:-]{1,128}, not '.' or '..')")
        trip = self.store.get("trip", key)
        if trip is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"trip": trip})

    async def read_many(self, request: web.Request) -> web.Response:
        return web.json_response({"trips": self.store.get_many("trip", ids_param(request, "id"))})

    def handle(self, topic: str, event: Doc) -> None:
        if topic == "airline/bookings":
            key, to = trip_id(event, "trip"), {"unavailable": "CANCELLED"}.get(field(event, "state", str))
        elif topic == "hotel/events/+":
            key = trip_id(event, "data.id")
            to = {"no_vacancy": "CANCELLED"}.get(field(event, "data.attributes.status", str))
        else:
            key = trip_id(event, "order_id")
            to = {"declined": "CANCELLED", "captured": "CONFIRMED"}.get(field(event, "status", str))
        trip = self.store.get("trip", key)
        if to is None or trip is None or trip["status"] != "REQUESTED":
            return
        trip |= {"status": to, "rev": trip["rev"] + 1, "modified": utc_now()}
        self.store.put("trip", key, trip, event=(TOPIC, {"trip": trip}))
