"""One participant as the fan-out sees it: single flight, composed with batching, the guard and hedging.

Concurrent reads of the same part share one call (single flight): the first read of a part
starts a *flight*, and later reads of it join that flight until it lands. When new flights
go out, and which go together through the participant's batch endpoint, is the
:class:`~aggregator._batch.Batcher`'s decision; every call runs behind the participant's
:class:`~aggregator._guard.Guard` (breaker, timeout, counting) and may be hedged by its
:class:`~aggregator._hedge.Hedger`.

The call runs as a task of the aggregator's :class:`~aggregator._background.Background` and is
bounded by the participant's own timeout, independent of any one request's deadline: a request
that gives up early leaves the call running, and its answer still reaches the part store for
the next read. Every answer is offered to the :class:`~aggregator._store.PartStore` as it
lands, so a part is served ``live`` when the store took it and ``cache`` when it already held
a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ._batch import Batcher
from ._breaker import BreakerState
from ._client import ParticipantClient, Transition
from ._flight import DEADLINE_REACHED, Flight, Landed, Spawn
from ._guard import Guard, LastAnswer
from ._hedge import Hedger
from ._store import PartStore
from .definition import Settings
from .errors import NotOpen, PartFailure
from .metrics import Metrics
from .view import Part

log = logging.getLogger(__name__)


class Upstream:
    """A participant's flights, over its batcher, guard and hedger (made inside its event loop)."""

    def __init__(
        self,
        client: ParticipantClient,
        *,
        settings: Settings,
        metrics: Metrics,
        store: PartStore,
        spawn: Spawn,
        breaker_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name = client.name
        self.client = client
        """For calls outside the breaker: the stall scan's listing, redrive's republish."""
        self._loop = asyncio.get_running_loop()
        self._store = store
        self._spawn = spawn
        self._metrics = metrics
        self._flights: dict[str, Flight] = {}
        self._guard = guard = Guard(
            name,
            url=client.spec.url,
            timeout_s=client.spec.timeout_ms / 1000,
            settings=settings,
            metrics=metrics,
            changed=breaker_changed,
        )
        self._hedger = Hedger(
            client,
            window=guard.window,
            timeout_s=guard.timeout_s,
            won=guard.won,
            land=self._land_fetched,
            settings=settings,
            metrics=metrics,
            spawn=spawn,
        )
        self._batcher = Batcher(self._send, wait_s=settings.batch_wait_ms / 1000, chunk=client.batch_chunk)
        # Label children resolved once: these are counted on every read.
        self._coalesced = metrics.coalesced.labels(name)
        self._batched = metrics.batched.labels(name)

    @property
    def breaker_state(self) -> BreakerState:
        """The participant's circuit breaker: ``closed``, ``open`` or ``half_open``."""
        return self._guard.state

    @property
    def last_answer(self) -> LastAnswer | None:
        """How the participant answered its last call or probe (``ok``, ``failed``); None before any."""
        return self._guard.last

    async def probe(self, *, timeout_s: float) -> str | None:
        """Ask the participant something cheap (its ``/healthz``; a mapped one, its base URL):
        any answer below 500 is one. Returns why it could not be reached, or None."""
        path = "/" if self.client.spec.mapped else "/healthz"
        return await self._guard.probe(lambda: self.client.get_any(path), timeout_s=timeout_s)

    # -- reads ---------------------------------------------------------------------------

    async def get(self, workflow_id: str, *, until: float) -> Part:
        """This participant's part, joining a call in flight if there is one; by loop time ``until``.

        Raises :class:`PartFailure` when the call failed or ``until`` came first.
        """
        flight = self.flight(workflow_id)
        try:
            # shield: one reader giving up at its deadline must not cancel the shared call.
            async with asyncio.timeout_at(until):
                landed = await asyncio.shield(flight)
        except TimeoutError:
            landed = DEADLINE_REACHED
        result = self.outcome(workflow_id, landed)
        if isinstance(result, PartFailure):
            raise result
        return result

    def flight(self, workflow_id: str) -> Flight:
        """The call for this part: the one in flight, or a new one (sent by the batcher).

        Readers wait on it without cancelling it (a done callback, or ``shield``), then turn
        what landed into a part or an error with :meth:`outcome`.
        """
        flight = self._flights.get(workflow_id)
        if flight is None:  # a new call (what _start does, inline: this runs for every part read)
            flight = self._flights[workflow_id] = self._loop.create_future()
            self._batcher.add(workflow_id)
            return flight
        self._coalesced.inc()
        return flight

    def outcome(self, workflow_id: str, landed: Landed) -> Part | PartFailure:
        """A reader's result from what its flight landed (``DEADLINE_REACHED`` if its deadline came first)."""
        if isinstance(landed, Part):
            return landed
        if landed is None:  # the call itself failed unexpectedly (logged by Background)
            return PartFailure(
                "unavailable", "internal error", participant=self.name, workflow_id=workflow_id
            )
        # A fresh error for each reader: the flight's is shared, and tracebacks would pile up.
        return PartFailure(
            landed.kind,
            landed.detail,
            participant=self.name,
            workflow_id=workflow_id,
            answered=landed.answered,
        )

    def refresh(self, workflow_id: str) -> None:
        """Fetch the part in the background (no reader waits); nothing new if a call is in flight."""
        if workflow_id not in self._flights:
            self._start(workflow_id)

    async def get_many(self, workflow_ids: list[str]) -> dict[str, Part]:
        """Parts of many workflows through the batch endpoint (no hedging, no coalescing), offered to the store."""
        fetched = await self._guard.call(None, lambda: self.client.fetch_many(workflow_ids))
        return {workflow_id: self._take(workflow_id, part) for workflow_id, part in fetched.items()}

    async def history(self, workflow_id: str) -> tuple[Transition, ...] | None:
        """The participant's whole history of the workflow (None: no record), behind the guard."""
        return await self._guard.call(workflow_id, lambda: self.client.history(workflow_id))

    # -- calls ---------------------------------------------------------------------------

    def _start(self, workflow_id: str) -> Flight:
        flight: Flight = self._loop.create_future()
        self._flights[workflow_id] = flight
        self._batcher.add(workflow_id)
        return flight

    def _send(self, workflow_ids: list[str]) -> bool:
        """One call for these flights: one alone (hedged), several through the batch endpoint."""
        # Each call lands the flights it was started for, never a later one of the same part.
        flights = self._flights
        try:
            if len(workflow_ids) == 1:
                workflow_id = workflow_ids[0]
                self._spawn(
                    self._one(workflow_id, flights[workflow_id]), name=f"fetch-{self.name}-{workflow_id}"
                )
            else:
                chunk = {w: flights[w] for w in workflow_ids}
                self._spawn(self._many(chunk), name=f"fetch-{self.name}-batch-{len(chunk)}")
                self._batched.inc(len(chunk))
        except NotOpen:  # the aggregator closed in this turn: tell the readers, leave nothing waiting
            for workflow_id in workflow_ids:
                self._land(workflow_id, flights[workflow_id], None)
            return False
        return True

    async def _one(self, workflow_id: str, flight: Flight) -> None:
        """One call for one part; its answer offered to the store and handed to the readers."""
        landed: Landed = None
        try:
            fetched = await self._guard.call(workflow_id, lambda: self._hedger.fetch(workflow_id, flight))
            landed = self._take(workflow_id, fetched)
        except PartFailure as failure:
            landed = failure
        finally:
            self._land(workflow_id, flight, landed)
            self._batcher.landed()

    async def _many(self, flights: dict[str, Flight]) -> None:
        """One batch call for the parts of several workflows, asked for together."""
        ids = list(flights)
        landed: dict[str, Part | PartFailure] = {}
        timer = self._hedger.watch_batch(flights)
        try:
            fetched = await self._guard.call(None, lambda: self.client.fetch_many(ids))
            landed = {w: self._take(w, fetched[w]) for w in ids}
        except PartFailure as failure:
            landed = dict.fromkeys(ids, failure)
        finally:
            if timer is not None:
                timer.cancel()
            for workflow_id, flight in flights.items():
                self._land(workflow_id, flight, landed.get(workflow_id))
            self._batcher.landed()

    def _land(self, workflow_id: str, flight: Flight, landed: Landed) -> None:
        """Hand ``landed`` to the readers of ``flight`` (once), and retire it."""
        if self._flights.get(workflow_id) is flight:
            del self._flights[workflow_id]
        if not flight.done():
            flight.set_result(landed)

    def _land_fetched(self, workflow_id: str, flight: Flight, fetched: Part) -> None:
        """A hedge's answer: offered to the store, then handed to the readers."""
        self._land(workflow_id, flight, self._take(workflow_id, fetched))

    def _take(self, workflow_id: str, fetched: Part) -> Part:
        """Offer a fetched part to the store; the part to serve (the kept one if it is newer)."""
        if self._store.take(workflow_id, fetched):
            return fetched
        offered = self._store.offer(workflow_id, fetched)
        if offered.contradicted is not None:
            self._metrics.contradicted.labels(self.name).inc()
            log.warning(
                "%s answered version %d for workflow %s, below version %d carried by an event it "
                "never confirmed: the event's copy is dropped (forged or misrouted; restrict who "
                "may publish on the broker)",
                self.name,
                fetched.version,
                workflow_id,
                offered.contradicted.version,
            )
        return offered.part if offered.taken else offered.part.served_as("cache")
