"""One participant as the fan-out sees it: single flight, batching, circuit breaker, hedging, timeout.

Concurrent reads of the same part share one call (single flight). Reads of *different*
workflows share calls too (the DataLoader pattern), through the participant's batch endpoint,
up to ``BATCH_CHUNK`` ids per call: those asked for in the same turn of the event loop and,
under load, those that come while a call to the participant is out. When new reads arrive less
than ``batch_wait_ms`` apart (a moving average) and a call is in flight, a new read waits for
company until that call lands or ``batch_wait_ms`` passes, whichever comes first. A read with
no call in flight, or when reads come seldom, goes out at the end of its turn, with hedging:
no wait at low load, and under load the more reads arrive together, the fewer calls (and the
less CPU, here and at the participant) each costs. A slow batch call is hedged by one second
batch call for the parts still waiting.

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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._breaker import CircuitBreaker
from ._client import BATCH_CHUNK, ParticipantClient
from ._hedge import HedgeBudget, LatencyWindow
from ._store import PartStore
from .definition import Settings
from .errors import NotOpen, PartFailure
from .metrics import Metrics
from .view import Part

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]
"""Starts a background task (the aggregator's :meth:`Background.spawn`)."""

_T = TypeVar("_T")
#: A hedge waits at least this many times the median latency (and at least the percentile).
_HEDGE_MARGIN = 2.0
Flight = asyncio.Future["Part | PartFailure | None"]
"""A part's call as its readers see it: what landed, once."""

#: The weight of the newest gap in the moving average of the time between two new reads.
_GAP_WEIGHT = 0.2

#: What a reader got when its deadline came before its flight landed.
DEADLINE_REACHED = PartFailure("timeout", "request deadline reached", participant="")


class Upstream:
    """A participant's client with its breaker, latency window, hedge budget and flights."""

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
        self.name = client.name
        self._breaker_changed = breaker_changed
        self.client = client
        self._store = store
        self._spawn = spawn
        self._settings = settings
        self._metrics = metrics
        self._timeout_s = client.spec.timeout_ms / 1000
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures, reset_s=settings.breaker_reset_ms / 1000
        )
        self.window = LatencyWindow()
        self.budget = HedgeBudget(settings.hedge_budget)
        self._flights: dict[str, asyncio.Future[Part | PartFailure | None]] = {}
        self._pending: list[str] = []
        """Ids whose flight waits for the next flush."""
        self._flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
        """The flush scheduled for the pending ids, if any."""
        self._calls_in_flight = 0
        """Calls (single or batch, hedges not counted) sent and not yet landed."""
        self._batch_wait_s = settings.batch_wait_ms / 1000
        self._last_start: float | None = None
        self._gap_s = 0.0
        """A moving average of the time between two new reads (each gap capped at a second)."""
        # Label children resolved once: these are counted on every call.
        name = self.name
        self._calls = {
            outcome: metrics.calls.labels(name, outcome)
            for outcome in ("ok", "timeout", "unavailable", "bad_response", "circuit_open", "cancelled")
        }
        self._latency = metrics.latency.labels(name)
        self._coalesced = metrics.coalesced.labels(name)
        self._hedges = metrics.hedges.labels(name)
        self._hedge_wins = metrics.hedge_wins.labels(name)
        self._batched = metrics.batched.labels(name)
        self._breaker_shown = "closed"
        metrics.set_breaker(name, "closed")

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

    def flight(self, workflow_id: str) -> asyncio.Future[Part | PartFailure | None]:
        """The call for this part: the one in flight, or a new one (sent at the end of this turn).

        Readers wait on it without cancelling it (``asyncio.wait``, or ``shield``), then turn
        what landed into a part or an error with :meth:`outcome`.
        """
        flight = self._flights.get(workflow_id)
        if flight is None:
            return self._start(workflow_id)
        self._coalesced.inc()
        return flight

    def outcome(self, workflow_id: str, landed: Part | PartFailure | None) -> Part | PartFailure:
        """A reader's result from what its flight landed (``DEADLINE_REACHED`` if its deadline came first)."""
        if isinstance(landed, Part):
            return landed
        if landed is None:  # the call itself failed unexpectedly (logged by Background)
            return PartFailure(
                "unavailable", "internal error", participant=self.name, workflow_id=workflow_id
            )
        # A fresh error for each reader: the flight's is shared, and tracebacks would pile up.
        return PartFailure(landed.kind, landed.detail, participant=self.name, workflow_id=workflow_id)

    def refresh(self, workflow_id: str) -> None:
        """Fetch the part in the background (no reader waits); nothing new if a call is in flight."""
        if workflow_id not in self._flights:
            self._start(workflow_id)

    def _start(self, workflow_id: str) -> asyncio.Future[Part | PartFailure | None]:
        loop = asyncio.get_running_loop()
        flight: asyncio.Future[Part | PartFailure | None] = loop.create_future()
        self._flights[workflow_id] = flight
        self._pending.append(workflow_id)
        now = loop.time()
        if self._last_start is not None:
            gap = min(now - self._last_start, 1.0)
            self._gap_s += _GAP_WEIGHT * (gap - self._gap_s)
        self._last_start = now
        if self._flush_at is None:
            if self._calls_in_flight and self._gap_s < self._batch_wait_s:
                # A call is out and reads come faster than the wait: others will join this one.
                self._flush_at = loop.call_later(self._batch_wait_s, self._flush)
            else:  # at the end of this turn, with the reads already scheduled in it
                self._flush_at = loop.call_soon(self._flush)
        return flight

    def _landed_call(self) -> None:
        """A call landed: reads waiting for a batch go out now if no other call is in flight."""
        self._calls_in_flight -= 1
        if self._calls_in_flight == 0 and isinstance(self._flush_at, asyncio.TimerHandle):
            self._flush_at.cancel()
            self._flush_at = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send the pending reads: one alone (hedged), several through the batch endpoint."""
        pending, self._pending, self._flush_at = self._pending, [], None
        for start in range(0, len(pending), BATCH_CHUNK):
            # Each call lands the flights it was started for, never a later one of the same part.
            chunk = {w: self._flights[w] for w in pending[start : start + BATCH_CHUNK]}
            try:
                if len(chunk) == 1:
                    ((workflow_id, flight),) = chunk.items()
                    self._spawn(self._one(workflow_id, flight), f"fetch-{self.name}-{workflow_id}")
                else:
                    self._spawn(self._many(chunk), f"fetch-{self.name}-batch-{len(chunk)}")
                    self._batched.inc(len(chunk))
                self._calls_in_flight += 1
            except NotOpen:  # the aggregator closed in this turn: tell the readers, leave nothing waiting
                for workflow_id, flight in chunk.items():
                    self._land(workflow_id, flight, None)

    async def _one(self, workflow_id: str, flight: Flight) -> None:
        """One call for one part; its answer offered to the store and handed to the readers."""
        landed: Part | PartFailure | None = None
        try:
            fetched = await self.guarded(workflow_id, lambda: self._hedged(workflow_id, flight))
            landed = self._take(workflow_id, fetched)
        except PartFailure as failure:
            landed = failure
        finally:
            self._land(workflow_id, flight, landed)
            self._landed_call()

    async def _many(self, flights: dict[str, Flight]) -> None:
        """One batch call for the parts of several workflows, asked for together (see the module docstring)."""
        ids = list(flights)
        landed: dict[str, Part | PartFailure] = {}
        delay = self._hedge_delay()
        timer = None
        if delay is not None:
            timer = asyncio.get_running_loop().call_later(delay, self._hedge_batch, flights)
        try:
            fetched = await self.guarded(None, lambda: self.client.fetch_many(ids))
            landed = {w: self._take(w, fetched[w]) for w in ids}
        except PartFailure as failure:
            landed = dict.fromkeys(ids, failure)
        finally:
            if timer is not None:
                timer.cancel()
            for workflow_id, flight in flights.items():
                self._land(workflow_id, flight, landed.get(workflow_id))
            self._landed_call()

    def _land(self, workflow_id: str, flight: Flight, landed: Part | PartFailure | None) -> None:
        """Hand ``landed`` to the readers of ``flight`` (once), and retire it."""
        if self._flights.get(workflow_id) is flight:
            del self._flights[workflow_id]
        if not flight.done():
            flight.set_result(landed)

    def _take(self, workflow_id: str, fetched: Part) -> Part:
        """Offer a fetched part to the store; the part to serve (the kept one if it is newer)."""
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

    async def get_many(self, workflow_ids: list[str]) -> dict[str, Part]:
        """Parts of many workflows through the batch endpoint (no hedging, no coalescing), offered to the store."""
        fetched = await self.guarded(None, lambda: self.client.fetch_many(workflow_ids))
        parts = {}
        for workflow_id, part in fetched.items():
            parts[workflow_id] = self._take(workflow_id, part)
        return parts

    async def guarded(self, workflow_id: str | None, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call`` behind the breaker and the participant's timeout; count the outcome.

        Reads, batches and timelines go through here (the stall scan's listing and redrive's
        republish are bounded by the client alone, outside the breaker).
        """
        if not self.breaker.allow():
            self._calls["circuit_open"].inc()
            raise PartFailure(
                "circuit_open", "circuit breaker is open", participant=self.name, workflow_id=workflow_id
            )
        self._show_breaker()
        started = asyncio.get_running_loop().time()
        outcome = "cancelled"
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await call()
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            raise PartFailure(
                "timeout",
                f"no answer within {self._timeout_s * 1000:.0f} ms",
                participant=self.name,
                workflow_id=workflow_id,
            ) from None
        except PartFailure as exc:
            outcome = exc.kind
            raise
        finally:
            if outcome == "ok":
                elapsed = asyncio.get_running_loop().time() - started
                self.breaker.success()
                self.window.add(elapsed)
                self._latency.observe(elapsed)
            elif outcome == "cancelled":
                self.breaker.release()
            else:
                self.breaker.failure()
            self._calls[outcome].inc()
            self._show_breaker()

    def _show_breaker(self) -> None:
        state = self.breaker.state
        if state == self._breaker_shown:
            return
        if state == "open" and self._breaker_shown == "closed":
            log.warning(
                "participant %s is failing (%s): its circuit is open, calls pause for %d ms",
                self.name,
                self.client.spec.url,
                self._settings.breaker_reset_ms,
            )
        elif state == "closed":
            log.info("participant %s answers again", self.name)
        self._breaker_shown = state
        self._metrics.set_breaker(self.name, state)
        self._breaker_changed()

    async def _hedged(self, workflow_id: str, flight: Flight) -> Part:
        """One call; a timer sends a second once the first outlives the observed percentile.

        The first call runs in the flight's own task (no task of its own); a hedge that wins
        hands its answer to the readers at once and cancels the first call.
        """
        delay = self._hedge_delay()
        if delay is None:
            return await self.client.fetch(workflow_id)
        primary = asyncio.current_task()
        assert primary is not None
        timer = asyncio.get_running_loop().call_later(delay, self._hedge, workflow_id, flight, primary)
        try:
            return await self.client.fetch(workflow_id)
        finally:
            timer.cancel()

    def _hedge_delay(self) -> float | None:
        """Earn a call's share of the hedge budget; the delay after which to hedge, if one may be."""
        self.budget.earn()
        if not self._settings.hedge or not self.budget.available:
            return None
        threshold = self.window.percentile(self._settings.hedge_percentile)
        median = self.window.percentile(50)
        if threshold is None or median is None:
            return None
        # A call past the percentile by a margin: the budget goes to calls that are really
        # slow, not to the ordinary tail just past the percentile (5% of calls by definition).
        return max(threshold, _HEDGE_MARGIN * median)

    def _hedge(self, workflow_id: str, flight: Flight, primary: asyncio.Task[Any] | None) -> None:
        """The first call is slow: send a second, budget allowing."""
        if flight.done() or not self.budget.spend():
            return
        self._hedges.inc()
        self._spawn(self._second(workflow_id, flight, primary), f"hedge-{self.name}-{workflow_id}")

    def _hedge_batch(self, flights: dict[str, Flight]) -> None:
        """A batch call is slow: one second batch call for its parts not landed yet, budget allowing.

        Each part lands from whichever call answers first; the first call goes on.
        """
        waiting = {w: f for w, f in flights.items() if not f.done()}
        if not waiting or not self.budget.spend():
            return
        self._hedges.inc()
        self._spawn(self._second_many(waiting), f"hedge-{self.name}-batch-{len(waiting)}")

    async def _second_many(self, flights: dict[str, Flight]) -> None:
        """The hedge of a batch call: the parts it answers first land from it."""
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._timeout_s):
                fetched = await self.client.fetch_many(list(flights))
        except (PartFailure, TimeoutError):
            return  # the first call still stands
        won = [w for w, f in flights.items() if not f.done()]
        if not won:
            return
        self._hedge_wins.inc()
        self._won(started)
        for workflow_id in won:
            self._land(workflow_id, flights[workflow_id], self._take(workflow_id, fetched[workflow_id]))

    async def _second(self, workflow_id: str, flight: Flight, primary: asyncio.Task[Any] | None) -> None:
        """The hedge call: if it answers first, its part lands (and a single first call is cancelled)."""
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(self._timeout_s):
                fetched = await self.client.fetch(workflow_id)
        except (PartFailure, TimeoutError):
            return  # the first call still stands
        if flight.done():
            return  # the first call answered first
        self._hedge_wins.inc()
        self._won(started)
        self._land(workflow_id, flight, self._take(workflow_id, fetched))
        if primary is not None:
            primary.cancel()

    def _won(self, started: float) -> None:
        """A hedge answered first: its latency counts, and the participant answers."""
        self.window.add(asyncio.get_running_loop().time() - started)
        self.breaker.success()
        self._show_breaker()
