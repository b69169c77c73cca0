"""What the HTTP app and a spec's routes see of a running participant.

:class:`~participants.service.ParticipantService` has all of it; :mod:`participants.http`
depends on this description rather than on the service, so that the service can build its app
and the dependencies point one way: service → http → running.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from contract import CloudEvent

from ._bus import BrokerLink
from .config import ParticipantConfig
from .spec import ParticipantSpec, Transition
from .store import Store, Transaction, WorkflowStatus


class Participant(Protocol):
    """A running participant: its spec, config, store and broker link, and its state changes."""

    @property
    def name(self) -> str:
        """The participant's name (``payment``)."""

    @property
    def spec(self) -> ParticipantSpec[Any]:
        """What it runs."""

    @property
    def config(self) -> ParticipantConfig:
        """How it runs."""

    @property
    def store(self) -> Store:
        """Its local state, inbox and outbox."""

    @property
    def link(self) -> BrokerLink:
        """Its connection to the broker, with its counters."""

    @property
    def counts(self) -> dict[str, int]:
        """Requests served since the process started, by kind (``status_requests``)."""

    def republish(self, workflow_id: str) -> int:
        """Publish again the events it produced for ``workflow_id``; how many."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A store transaction that wakes the outbox relay after it commits."""

    def commit(
        self,
        tx: Transaction,
        workflow_id: str,
        current: WorkflowStatus | None,
        decision: Transition,
        *,
        cause: CloudEvent | None,
    ) -> WorkflowStatus:
        """Write ``decision`` as the next version and enqueue the event announcing it."""
