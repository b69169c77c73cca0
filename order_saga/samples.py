"""The example saga's outcomes, one sample order each: the one table the demo, tests and benchmarks use.

Per outcome: the order that drives the saga there, the local state each participant ends in
(``None``: it never hears of the workflow), the overall state the packaged workflow
definition derives from those parts, and how many events each participant applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .saga import OUT_OF_STOCK_SKU, UNSHIPPABLE_COUNTRY, Item, Order


@dataclass(frozen=True, slots=True)
class Sample:
    """One way the saga ends."""

    outcome: str
    order: Order
    parts: Mapping[str, str | None]
    """Each participant's final local state."""
    state: str
    """The overall state the packaged definition derives."""
    applied: Mapping[str, int]
    """How many events each participant applies on the way: exactly these, never more."""

    def body(self, order_id: str | None = None) -> dict[str, Any]:
        """The ``POST /orders`` body placing this order (with ``order_id`` when given)."""
        body = self.order.model_dump(mode="json")
        return body if order_id is None else {"order_id": order_id, **body}


SAMPLES: dict[str, Sample] = {
    s.outcome: s
    for s in (
        Sample(
            "happy",
            Order(amount=42.5, currency="EUR", items=[Item(sku="BOOK-1", qty=1)], country="FR"),
            {"order": "CONFIRMED", "payment": "AUTHORIZED", "inventory": "RESERVED", "shipping": "SCHEDULED"},
            "COMPLETED",
            {"order": 1, "payment": 1, "inventory": 1, "shipping": 1},
        ),
        Sample(
            "declined",
            Order(amount=5000.0, currency="EUR", items=[Item(sku="TV-1", qty=1)], country="FR"),
            {"order": "CANCELLED", "payment": "DECLINED", "inventory": None, "shipping": None},
            "FAILED",
            {"order": 1, "payment": 1, "inventory": 0, "shipping": 0},
        ),
        Sample(
            "out-of-stock",
            Order(amount=10.0, currency="EUR", items=[Item(sku=OUT_OF_STOCK_SKU, qty=1)], country="FR"),
            {"order": "CANCELLED", "payment": "REFUNDED", "inventory": "REJECTED", "shipping": None},
            "COMPENSATED",
            {"order": 1, "payment": 2, "inventory": 1, "shipping": 0},
        ),
        Sample(
            "unshippable",
            Order(
                amount=10.0, currency="EUR", items=[Item(sku="BOOK-1", qty=1)], country=UNSHIPPABLE_COUNTRY
            ),
            {"order": "CANCELLED", "payment": "REFUNDED", "inventory": "RELEASED", "shipping": "FAILED"},
            "COMPENSATED",
            {"order": 1, "payment": 2, "inventory": 2, "shipping": 1},
        ),
    )
}
