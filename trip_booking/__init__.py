"""A second example: a trip booking (flight, hotel, payment; compensations on failure) across
four small aiohttp services that were not written for the aggregator.

Each service keeps its own REST shape and its own event JSON on its own MQTT topic
(:mod:`trip_booking.trips`, :mod:`~trip_booking.flights`, :mod:`~trip_booking.hotel`,
:mod:`~trip_booking.payments`); ``trip.toml`` maps them for the aggregator.
``python -m trip_booking serve NAME`` runs one of them, ``python -m trip_booking demo`` all four
with a broker and the aggregator.
"""

from __future__ import annotations

#: Each service's default HTTP port (the URLs in trip.toml).
PORTS = {"trips": 8101, "flights": 8102, "hotel": 8103, "payments": 8104}

__all__ = ["PORTS"]
