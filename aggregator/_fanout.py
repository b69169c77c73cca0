"""One participant as the fan-out sees it: single flight, circuit breaker, delayed hedging, timeout.

Concurrent reads of the same part share one call (single flight). The call runs as a task of
the aggregator's :class:`~aggregator._background.Background` and is bounded by the
participant's own timeout, independent of any one request's deadline: a request that gives up
early leaves the call running, and its answer still reaches the part store for the next read.
Every answer is offered to the :class:`~aggregator._store.PartStore` as it lands, so a part is
served ``live`` when the store took it and ``cache`` when it already held a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._breaker import CircuitBreaker
from ._client import ParticipantClient
from ._hedge import HedgeBudget, LatencyWindow
from ._store import PartStore
from .definition import Settings
from .errors import PartFailure
from .metrics import Metrics
from .view import Part

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, "Part | PartFailure"], str], "asyncio.Task[Part | PartFailure | None]"]
"""Starts a background task (the aggregator's :meth:`Background.spawn`)."""

_T = TypeVar("_T")


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
        self._flights: dict[str, asyncio.Task[Part | PartFailure | None]] = {}
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
        self._breaker_shown = "closed"
        metrics.set_breaker(name, "closed")

    async def get(self, workflow_id: str, *, until: float) -> Part:
        """This participant's part, joining a call in flight if there is one; by loop time ``until``.

        Raises :class:`PartFailure` when the call failed or ``until`` came first.
        """
        task = self._flights.get(workflow_id)
        if task is None:
            task = self._start(workflow_id)
        else:
            self._coalesced.inc()
        try:
            # shield: one reader giving up at its deadline must not cancel the shared call.
            async with asyncio.timeout_at(until):
                landed = await asyncio.shield(task)
        except TimeoutError:
            raise PartFailure(
                "timeout", "request deadline reached", participant=self.name, workflow_id=workflow_id
            ) from None
        if isinstance(landed, Part):
            return landed
        if landed is None:  # the flight itself failed unexpectedly (logged by Background)
            raise PartFailure("unavailable", "internal error", participant=self.name, workflow_id=workflow_id)
        # A fresh error for each reader: the flight's is shared, and tracebacks would pile up.
        raise PartFailure(landed.kind, landed.detail, participant=self.name, workflow_id=workflow_id)

    def refresh(self, workflow_id: str) -> None:
        """Fetch the part in the background (no reader waits); nothing new if a call is in flight."""
        if workflow_id not in self._flights:
            self._start(workflow_id)

    def _start(self, workflow_id: str) -> asyncio.Task[Part | PartFailure | None]:
        task = self._spawn(self._flight(workflow_id), f"fetch-{self.name}-{workflow_id}")
        self._flights[workflow_id] = task
        task.add_done_callback(lambda t: self._landed(workflow_id, t))
        return task

    def _landed(self, workflow_id: str, task: asyncio.Task[Part | PartFailure | None]) -> None:
        if self._flights.get(workflow_id) is task:
            del self._flights[workflow_id]

    async def _flight(self, workflow_id: str) -> Part | PartFailure:
        """One call; its answer offered to the store. Errors are returned, not raised (see Background)."""
        try:
            fetched = await self._guarded(workflow_id, lambda: self._hedged(workflow_id))
        except PartFailure as failure:
            return failure
        return self._take(workflow_id, fetched)

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
        fetched = await self._guarded(None, lambda: self.client.fetch_many(workflow_ids))
        parts = {}
        for workflow_id, part in fetched.items():
            parts[workflow_id] = self._take(workflow_id, part)
        return parts

    async def _guarded(self, workflow_id: str | None, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call`` behind the breaker and the participant's timeout; count the outcome."""
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

    async def _hedged(self, workflow_id: str) -> Part:
        """One call, plus a second once the first outlives the observed percentile (budget allowing)."""
        self.budget.earn()
        delay = self.window.percentile(self._settings.hedge_percentile) if self._settings.hedge else None
        if delay is None or not self.budget.available:
            return await self.client.fetch(workflow_id)  # no hedge possible: no task either
        primary = asyncio.create_task(self.client.fetch(workflow_id))
        tasks = {primary}
        try:
            if delay is not None:
                done, _ = await asyncio.wait(tasks, timeout=delay)
                if not done and self.budget.spend():
                    self._hedges.inc()
                    tasks.add(asyncio.create_task(self.client.fetch(workflow_id)))
            error: BaseException | None = None
            while tasks:
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (exc := task.exception()) is None:
                        if task is not primary:
                            self._hedge_wins.inc()
                        return task.result()
                    error = exc
            assert error is not None
            raise error
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
