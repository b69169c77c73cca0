"""A small framework for saga participants, and the four participants of the example saga.

A participant is a :class:`ParticipantSpec` (its name, its handlers, its local states) run by a
:class:`ParticipantService`, which keeps local state in SQLite with a transactional outbox and
an idempotent inbox, talks to an MQTT broker with manual acknowledgements, and serves the
status API of DESIGN.md §4.
"""

from .config import BrokerURL, ParticipantConfig, StatusFaults
from .errors import ConfigError, InvalidEvent, OrderConflict, ParticipantError
from .events import CloudEvent, EventData, new_event, parse_event, topic_for
from .saga import DEFAULT_PORTS, INVENTORY, ORDER, PAYMENT, SHIPPING, SPECS, Order, place_order
from .service import ParticipantService
from .spec import HandlerContext, ParticipantSpec, Settings, Transition
from .store import Store, WorkflowStatus

__all__ = [
    "DEFAULT_PORTS",
    "INVENTORY",
    "ORDER",
    "PAYMENT",
    "SHIPPING",
    "SPECS",
    "BrokerURL",
    "CloudEvent",
    "ConfigError",
    "EventData",
    "HandlerContext",
    "InvalidEvent",
    "Order",
    "OrderConflict",
    "ParticipantConfig",
    "ParticipantError",
    "ParticipantService",
    "ParticipantSpec",
    "Settings",
    "StatusFaults",
    "Store",
    "Transition",
    "WorkflowStatus",
    "new_event",
    "parse_event",
    "place_order",
    "topic_for",
]
