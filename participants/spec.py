"""What a participant *is*: its name, its local state machine and its event handlers.

A participant service (see :mod:`participants.service`) runs any :class:`ParticipantSpec`; the
four saga participants in :mod:`participants.saga` are nothing but specs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import CloudEvent
from .store import WorkflowStatus

if TYPE_CHECKING:
    from aiohttp import web

    from .service import ParticipantService


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Business knobs of the example saga (command-line ``--payment-limit``, ``--initial-stock``)."""

    payment_limit: float = 1000.0
    initial_stock: int = 10_000


@dataclass(frozen=True, slots=True)
class Transition:
    """A handler's decision: move to ``state`` and publish ``{participant}.{emit}``.

    ``data`` is merged into the workflow's local data and carried in the event beside
    ``state`` and ``version`` (event-carried state).
    """

    state: str
    emit: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What a handler sees: the event, the workflow's current local part, and the open transaction."""

    event: CloudEvent
    current: WorkflowStatus | None
    settings: Settings
    db: sqlite3.Connection
    """The connection inside the handler's transaction, for participant-specific tables."""


Handler = Callable[[HandlerContext], Transition | None]
"""Decides what an event does; ``None`` means "nothing to do" (the event is still recorded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantSpec:
    """A participant: its name, the events it reacts to, and any extra tables or routes."""

    name: str
    handlers: Mapping[str, Handler]
    """Event type (``payment.authorized``) → handler."""
    schema: str = ""
    """Extra SQL run at start-up (``CREATE TABLE IF NOT EXISTS ...``)."""
    routes: Callable[[web.Application, ParticipantService], None] | None = None
    """Adds participant-specific HTTP routes (the order service's ``POST /orders``)."""
