"""The example order saga, built on the :mod:`participants` framework.

Its four participants (order, payment, inventory, shipping) are specs (:mod:`order_saga.saga`);
:mod:`order_saga.coordination` runs the same saga orchestrated or behind a front controller;
:mod:`order_saga.samples` holds one order per outcome; :mod:`order_saga.demo` starts a broker
(:mod:`order_saga.broker`) and the four participants in one process, and
:mod:`order_saga.aggregator_demo` adds the aggregator (``python -m aggregator demo``).
``python -m participants NAME`` runs one of them (:mod:`order_saga.cli`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .saga import (
        DEFAULT_PORTS,
        INVENTORY,
        ORDER,
        PAYMENT,
        SHIPPING,
        SPECS,
        InventorySettings,
        Order,
        OrderConflict,
        PaymentSettings,
        place_order,
    )
    from .samples import SAMPLES, Sample

__all__ = [
    "DEFAULT_PORTS",
    "INVENTORY",
    "ORDER",
    "PAYMENT",
    "SAMPLES",
    "SHIPPING",
    "SPECS",
    "InventorySettings",
    "Order",
    "OrderConflict",
    "PaymentSettings",
    "Sample",
    "place_order",
]


#: Where each name of ``__all__`` lives. Loaded on first use (PEP 562), so that importing only
#: :mod:`order_saga.broker` (the trip example's demo does) does not load the participants framework.
_FROM = {name: ".samples" if name in ("SAMPLES", "Sample") else ".saga" for name in __all__}


def __getattr__(name: str) -> Any:
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_FROM[name], __name__), name)
    globals()[name] = value
    return value
