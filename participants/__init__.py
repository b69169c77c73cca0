"""A small framework for saga participants, and the four participants of the example saga.

A participant is a :class:`ParticipantSpec` (its name, its handlers, its own settings) run by
a :class:`ParticipantService`, which keeps local state in SQLite with a transactional outbox
and an idempotent inbox, talks to an MQTT broker with manual acknowledgements, and serves the
participant status API (docs/design.md, "Participants"). The wire formats come from
:mod:`contract`.
"""

from .config import ParticipantConfig, StatusFaults
from .errors import ConfigError, OrderConflict, ParticipantError
from .saga import (
    DEFAULT_PORTS,
    INVENTORY,
    ORDER,
    PAYMENT,
    SHIPPING,
    SPECS,
    InventorySettings,
    Order,
    PaymentSettings,
    place_order,
)
from .samples import SAMPLES, Sample
from .service import ParticipantService
from .spec import HandlerContext, NoSettings, OpenAPIPaths, ParticipantSpec, Transition
from .store import Store, WorkflowStatus

__all__ = [
    "DEFAULT_PORTS",
    "INVENTORY",
    "ORDER",
    "PAYMENT",
    "SAMPLES",
    "SHIPPING",
    "SPECS",
    "ConfigError",
    "HandlerContext",
    "InventorySettings",
    "NoSettings",
    "OpenAPIPaths",
    "Order",
    "OrderConflict",
    "ParticipantConfig",
    "ParticipantError",
    "ParticipantService",
    "ParticipantSpec",
    "PaymentSettings",
    "Sample",
    "StatusFaults",
    "Store",
    "Transition",
    "WorkflowStatus",
    "place_order",
]
