"""The payment provider: one payment per trip, with a revision and epoch-millisecond times.

``GET /v2/payments?order_id=ID[,ID...]`` answers ``{"items": [{"order_id", "status", "revision",
"updated", "amount"}]}``; each payment goes out on ``payments/{id}/events`` as ``{"order_id",
"status", "revision", "ts", "amount"}``. A trip is charged once its room is confirmed (its
``amount`` known from the request): ``declined`` above 5000, else ``captured``.
"""

from __future__ import annotations

import time

from aiohttp import web

from ._kit import Doc, Service, field, ids_param, trip_id

LIMIT = 5000


class Payments(Service):
    name = "payments"
    topics = ("trips/events", "hotel/events/+")

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v2/payments", self.payments)

    async def payments(self, request: web.Request) -> web.Response:
        return web.json_response({"items": self.store.get_many("payment", ids_param(request, "order_id"))})

    def handle(self, topic: str, event: Doc) -> None:
        if topic == "trips/events":
            if field(event, "trip.status", str) == "REQUESTED":
                self._learn(trip_id(event, "trip.id"), amount=field(event, "trip.amount", (int, float)))
        elif field(event, "data.attributes.status", str) == "confirmed":
            self._learn(trip_id(event, "data.id"), room="confirmed")

    def _learn(self, key: str, **facts: object) -> None:
        """Keep what is known of the trip; charge it once its amount and its room are known."""
        request = (self.store.get("request", key) or {}) | facts
        self.store.put("request", key, request)
        if "amount" in request and "room" in request and self.store.get("payment", key) is None:
            amount, now = request["amount"], int(time.time() * 1000)
            status = "declined" if amount > LIMIT else "captured"
            item = {"order_id": key, "status": status, "revision": 1, "updated": now, "amount": amount}
            event = {"order_id": key, "status": status, "revision": 1, "ts": now, "amount": amount}
            self.store.put("payment", key, item, event=(f"payments/{key}/events", event))
