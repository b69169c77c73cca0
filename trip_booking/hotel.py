"""The hotel: a room per trip, JSON:API style, the state nested under ``data.attributes``.

``GET /hotel/reservations/{id}`` answers ``{"data": {"type": "reservation", "id", "attributes":
{"status", "version", "updatedAt", "room"}}}``; each change goes out on ``hotel/events/{id}``
with the same body. A room is booked once the trip is requested (its ``nights`` known) and its
flight is held: ``no_vacancy`` beyond 14 nights, else ``confirmed``; ``cancelled`` when the
payment is declined.
"""

from __future__ import annotations

import zlib

from aiohttp import web

from contract import is_valid_workflow_id, utc_now

from ._kit import Doc, Malformed, Service, field, trip_id

MAX_NIGHTS = 14


class Hotel(Service):
    name = "hotel"
    topics = ("trips/events", "airline/bookings", "payments/+/events")

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/hotel/reservations/{id}", self.read)

    async def read(self, request: web.Request) -> web.Response:
        key = request.match_info["id"]
        if not is_valid_workflow_id(key):
            raise Malformed("not a trip id ([A-Za-z0-9._:-]{1,128}, not '.' or '..')")
        reservation = self.store.get("reservation", key)
        if reservation is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(reservation)

    def handle(self, topic: str, event: Doc) -> None:
        if topic == "trips/events":
            if field(event, "trip.status", str) == "REQUESTED":
                self._learn(trip_id(event, "trip.id"), nights=field(event, "trip.nights", int))
        elif topic == "airline/bookings":
            if field(event, "state", str) == "held":
                self._learn(trip_id(event, "trip"), flight="held")
        elif field(event, "status", str) == "declined":
            key = trip_id(event, "order_id")
            found = self.store.get("reservation", key)
            if found is not None and found["data"]["attributes"]["status"] == "confirmed":
                self._set(key, "cancelled", found["data"]["attributes"])

    def _learn(self, key: str, **facts: object) -> None:
        """Keep what is known of the trip; book the room once its nights and its flight are known."""
        request = (self.store.get("request", key) or {}) | facts
        self.store.put("request", key, request)
        if "nights" in request and "flight" in request and self.store.get("reservation", key) is None:
            full = request["nights"] > MAX_NIGHTS
            room = "" if full else f"double-{100 + zlib.crc32(key.encode()) % 400}"
            self._set(key, "no_vacancy" if full else "confirmed", {"version": 0, "room": room})

    def _set(self, key: str, status: str, before: Doc) -> None:
        attributes = {"status": status, "version": before["version"] + 1, "updatedAt": utc_now()}
        body = {
            "data": {"type": "reservation", "id": key, "attributes": attributes | {"room": before["room"]}}
        }
        self.store.put("reservation", key, body, event=(f"hotel/events/{key}", body))
