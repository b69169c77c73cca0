"""A small framework for saga participants.

A participant is a :class:`ParticipantSpec` (its name, its handlers, its own settings) run by
a :class:`ParticipantService`, which keeps local state in SQLite with a transactional outbox
and an idempotent inbox, talks to an MQTT broker with manual acknowledgements, and serves the
participant status API (docs/design.md, "Participants"). The wire formats come from
:mod:`contract`; the example saga built on it is :mod:`order_saga`.
"""

from .config import ParticipantConfig, StatusFaults
from .errors import BadRequest, ConfigError, Conflict, NoRecord, ParticipantError, Unavailable, Unprocessable
from .running import Participant
from .service import ParticipantService
from .spec import HandlerContext, NoSettings, OpenAPIPaths, ParticipantSpec, Transition
from .store import Store, WorkflowStatus

__all__ = [
    "BadRequest",
    "ConfigError",
    "Conflict",
    "HandlerContext",
    "NoRecord",
    "NoSettings",
    "OpenAPIPaths",
    "Participant",
    "ParticipantConfig",
    "ParticipantError",
    "ParticipantService",
    "ParticipantSpec",
    "StatusFaults",
    "Store",
    "Transition",
    "Unavailable",
    "Unprocessable",
    "WorkflowStatus",
]
