"""What a participant *is*: its name, its handlers, its own settings, tables and routes.

A participant service (see :mod:`participants.service`) runs any :class:`ParticipantSpec`; the
four participants of the example saga (:mod:`order_saga.saga`) are nothing but specs. A spec's business
settings are its own frozen dataclass (``settings``): each field becomes a command-line option
(``payment_limit`` → ``--payment-limit``, its ``metadata["help"]`` the help text), and a field
check in ``__post_init__`` raises :class:`~participants.errors.ConfigError`. The framework's
config knows nothing of them, so a fifth participant brings its own.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from contract import CloudEvent

from .store import WorkflowStatus

if TYPE_CHECKING:
    from aiohttp import web

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class NoSettings:
    """Settings of a participant that has none."""


@dataclass(frozen=True, slots=True)
class Command:
    """An order to one participant (``payment`` + ``refund``), sent on ``{prefix}/command/payment/refund``.

    Only the orchestrator sends commands (docs/design.md, "Coordination strategies"); ``data``
    holds the domain fields the participant needs.
    """

    participant: str
    action: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """A handler's decision: move to ``state`` and publish ``{participant}.{emit}``.

    ``data`` is merged into the workflow's local data and carried in the event beside
    ``state`` and ``version`` (event-carried state). ``emit=None`` publishes no event of its
    own; ``commands`` are sent in the same transaction (the outbox), after the event.
    """

    state: str
    emit: str | None
    data: Mapping[str, Any] = field(default_factory=dict)
    commands: tuple[Command, ...] = ()


@dataclass(frozen=True, slots=True)
class HandlerContext(Generic[S]):
    """What a handler sees: the event, the workflow's current local part, settings, the transaction."""

    event: CloudEvent
    current: WorkflowStatus | None
    settings: S
    """The participant's own settings (its spec's ``settings`` type)."""
    db: sqlite3.Connection
    """The connection inside the handler's transaction, for participant-specific tables."""


Handler = Callable[[HandlerContext[S]], Transition | None]
"""Decides what an event does; ``None`` means "nothing to do" (the event is still recorded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAPIPaths:
    """What a spec's own routes add to the participant's OpenAPI document (``GET /openapi.json``).

    ``paths`` are OpenAPI 3.1 path items; their schemas may ``$ref`` ``#/components/schemas/NAME``
    for a NAME in ``schemas``, and their error answers use
    :func:`participants.openapi.problem_response`. The framework adds the security requirement
    and the 401 answer itself when authentication is on.
    """

    paths: Mapping[str, Mapping[str, Any]]
    schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantSpec(Generic[S]):
    """A participant: its name, the events it reacts to, its settings, extra tables and routes."""

    name: str
    handlers: Mapping[str, Handler[S]]
    """Event type (``payment.authorized``) → handler."""
    settings: S
    """The participant's own business settings (a frozen dataclass), with their defaults."""
    schema: str = ""
    """Extra SQL run at start-up (``CREATE TABLE IF NOT EXISTS ...``)."""
    routes: Callable[[web.Application], None] | None = None
    """Adds participant-specific HTTP routes (the order service's ``POST /orders``); their handlers
    reach the running participant as ``request.app[participants.http.SERVICE]``."""
    openapi_paths: OpenAPIPaths | None = None
    """How ``routes`` are described in ``GET /openapi.json``; give it whenever ``routes`` is given."""

    def with_settings(self, **changes: Any) -> ParticipantSpec[S]:
        """A copy whose settings have ``changes`` applied (checked by the settings' own ``__post_init__``)."""
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes))  # type: ignore[type-var]


def setting_fields(spec: ParticipantSpec[Any]) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of a spec's settings: each one is a command-line option ``--field-name``."""
    return dataclasses.fields(spec.settings) if dataclasses.is_dataclass(spec.settings) else ()
