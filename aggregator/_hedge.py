"""Delayed hedging: a second request once a call outlives the participant's observed p95.

:class:`Hedger` arms a timer beside each call; when it fires first, a second call goes out and
whichever answers first lands. A hedged single call runs in its flight's own task (no task of
its own) and is cancelled when its hedge wins; a slow batch call is hedged by *one* second
batch call for its parts not landed yet, and each part lands from whichever call answers it
first while the first call goes on.

The delay is the participant's ``hedge_percentile`` latency, at least twice its median and at
least :data:`HEDGE_FLOOR_S`, once the :class:`LatencyWindow` holds enough samples to trust
either. The budget is a token bucket: every call earns ``ratio`` of a token and a hedge spends
one. The bucket starts empty, so hedges never exceed ``ratio`` of the calls made so far; its
burst (10) lets slow calls that come in clusters all be hedged.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._client import ParticipantClient
from ._flight import Flight, Spawn
from ._timers import Timed, Timers
from .definition import Settings
from .errors import PartFailure
from .metrics import Metrics
from .view import Part

#: Slack for float sums (ten shares of 0.1 make one token, not 0.9999999999999999).
_EPSILON = 1e-9
#: A full window re-sorts after this many new samples (a percentile is read on every call).
_RESORT_EVERY = 16
#: A hedge waits at least this many times the median latency (and at least the percentile).
_HEDGE_MARGIN = 2.0
#: And at least this long: a call to a participant that answers in a fraction of a millisecond
#: is late by a few milliseconds mostly because this process's event loop (or the machine) was
#: busy, and a second call made then waits in the same loop. On loopback, with one participant
#: 100 ms late 2% of the time, hedges after 2 ms won 31 of 454 times and left p99 where it was;
#: after 5 ms they won 36 of 37 times and cut p99 from 103 ms to 9 ms (the tail benchmark).
HEDGE_FLOOR_S = 0.005


class LatencyWindow:
    """Recent successful call latencies of one participant."""

    def __init__(self, size: int = 256, min_samples: int = 20) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._min = min_samples
        self._size = size
        self._sorted: list[float] = []
        self._unsorted = 0
        """Samples added since ``_sorted`` was made."""
        self._generation = 0
        """How many times ``_sorted`` was made: percentiles change only when it does."""

    def add(self, seconds: float) -> None:
        """Record one call's latency."""
        self._samples.append(seconds)
        self._unsorted += 1

    def refresh(self) -> int | None:
        """Re-sort the copy percentiles are read from, if due; its generation (the percentiles
        stay the same while it does), or None while there are too few samples to trust one."""
        if len(self._samples) < self._min:
            return None
        filling = len(self._samples) < self._size
        if self._unsorted and (filling or self._unsorted >= _RESORT_EVERY or not self._sorted):
            self._sorted = sorted(self._samples)
            self._unsorted = 0
            self._generation += 1
        return self._generation

    def percentile(self, pct: float) -> float | None:
        """The ``pct`` percentile, or None before there are enough samples to trust one.

        Exact while the window fills; once full, from a sorted copy refreshed every
        ``_RESORT_EVERY`` samples (a shift of at most a few samples out of 256).
        """
        if self.refresh() is None:
            return None
        ordered = self._sorted
        # Nearest rank: the smallest sample with at least pct% of the samples at or below it.
        index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered) - _EPSILON) - 1))
        return ordered[index]


class HedgeBudget:
    """At most ``ratio`` extra requests per call, with a burst of ``burst`` hedges."""

    def __init__(self, ratio: float, burst: float = 10.0) -> None:
        self._ratio = ratio
        self._burst = burst
        self._tokens = 0.0

    def earn(self) -> None:
        """One call went out: earn a share of a hedge."""
        self._tokens = min(self._burst, self._tokens + self._ratio)

    @property
    def available(self) -> bool:
        """Whether a hedge could be spent now."""
        return self._tokens >= 1.0 - _EPSILON

    def spend(self) -> bool:
        """Take one hedge if the budget allows."""
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


class _Due(Timed):
    """A hedge that will be due at loop time ``when`` unless its call lands first."""

    __slots__ = ("flight", "primary", "workflow_id")

    def __init__(self, when: float, workflow_id: str, flight: Flight, primary: asyncio.Task[Any]) -> None:
        super().__init__(when)
        self.workflow_id = workflow_id
        self.flight: Flight | None = flight
        """None (with ``primary``) once the call landed: a hedge kept until those due before it
        go holds neither."""
        self.primary: asyncio.Task[Any] | None = primary


class HedgeTimers:
    """The hedges of one participant's single calls, due on one timer of the event loop
    (:mod:`aggregator._timers`) instead of a ``call_later`` per call; a call that lands
    discards its hedge. Delays differ from call to call (the percentile moves), so a hedge may
    fall due before one added earlier."""

    def __init__(self, due: Callable[[str, Flight, asyncio.Task[Any]], None]) -> None:
        self._due = due
        self._timers: Timers[_Due] = Timers(self._fire)

    def add(self, delay: float, workflow_id: str, flight: Flight, primary: asyncio.Task[Any]) -> _Due:
        """The hedge of ``primary``'s call, due ``delay`` seconds from now; discard it when the call lands."""
        when = asyncio.get_running_loop().time() + delay
        return self._timers.add(_Due(when, workflow_id, flight, primary))

    def discard(self, entry: _Due) -> None:
        """The call landed: its hedge is not due."""
        self._timers.discard(entry)
        entry.flight = entry.primary = None

    def __len__(self) -> int:
        """Hedges kept (for tests: those of landed calls are dropped once none due earlier remains)."""
        return len(self._timers)

    def _fire(self, entry: _Due) -> None:
        if entry.flight is not None and entry.primary is not None:  # always, for a call in flight
            self._due(entry.workflow_id, entry.flight, entry.primary)


class Hedger:
    """Hedges one participant's slow calls, within its budget; hedges land through ``land``."""

    def __init__(
        self,
        client: ParticipantClient,
        *,
        window: LatencyWindow,
        timeout_s: float,
        won: Callable[[float], None],
        land: Callable[[str, Flight, Part], None],
        settings: Settings,
        metrics: Metrics,
        spawn: Spawn,
    ) -> None:
        """``window`` holds the participant's latencies; ``won(started)`` is told when a hedge
        started at loop time ``started`` answered first; ``land`` hands a hedge's part to its flight."""
        self._client = client
        self._window = window
        self._timeout_s = timeout_s
        self._won = won
        self._name = client.name
        self._spawn = spawn
        self._land = land
        self._on = settings.hedge
        self._percentile = settings.hedge_percentile
        self.budget = HedgeBudget(settings.hedge_budget)
        self._delay: float | None = None
        self._delay_of: int | None = None
        """The window's generation ``_delay`` was computed from."""
        self._hedges = metrics.hedges.labels(client.name)
        self._hedge_wins = metrics.hedge_wins.labels(client.name)
        self._timers = HedgeTimers(self._hedge)

    def delay(self) -> float | None:
        """Earn a call's share of the budget; the delay after which to hedge it, if one may be."""
        self.budget.earn()
        if not self._on or not self.budget.available:
            return None
        window = self._window
        generation = window.refresh()
        if generation is None:
            return None
        if generation != self._delay_of:
            threshold = window.percentile(self._percentile)
            median = window.percentile(50)
            # A call past the percentile by a margin: the budget goes to calls that are really
            # slow, not to the ordinary tail just past the percentile (5% of calls by definition).
            self._delay_of = generation
            self._delay = None
            if threshold is not None and median is not None:
                self._delay = max(threshold, _HEDGE_MARGIN * median, HEDGE_FLOOR_S)
        return self._delay

    async def fetch(self, workflow_id: str, flight: Flight) -> Part:
        """The part, from one call; a timer sends a second once the first outlives the delay.

        Runs in the flight's own task, which a winning hedge cancels after landing its answer.
        """
        delay = self.delay()
        if delay is None:
            return await self._client.fetch(workflow_id)
        primary = asyncio.current_task()
        assert primary is not None
        timers = self._timers
        due = timers.add(delay, workflow_id, flight, primary)
        try:
            return await self._client.fetch(workflow_id)
        finally:
            timers.discard(due)

    def watch_batch(self, flights: dict[str, Flight]) -> asyncio.TimerHandle | None:
        """Arm the hedge of a batch call for these flights; the timer to cancel when the call lands."""
        delay = self.delay()
        if delay is None:
            return None
        return asyncio.get_running_loop().call_later(delay, self._hedge_batch, flights)

    def _hedge(self, workflow_id: str, flight: Flight, primary: asyncio.Task[Any]) -> None:
        """The first call is slow: send a second, budget allowing."""
        if flight.done() or not self.budget.spend():
            return
        self._hedges.inc()
        self._spawn(self._second(workflow_id, flight, primary), name=f"hedge-{self._name}-{workflow_id}")

    def _hedge_batch(self, flights: dict[str, Flight]) -> None:
        """A batch call is slow: one second batch call for its parts not landed yet, budget allowing."""
        waiting = {w: f for w, f in flights.items() if not f.done()}
        if not waiting or not self.budget.spend():
            return
        self._hedges.inc()
        self._spawn(self._second_many(waiting), name=f"hedge-{self._name}-batch-{len(waiting)}")

    async def _second(self, workflow_id: str, flight: Flight, primary: asyncio.Task[Any]) -> None:
        """The hedge call: if it answers first, its part lands and the first call is cancelled."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                fetched = await self._client.fetch(workflow_id)
        except (PartFailure, TimeoutError):
            return  # the first call still stands
        if flight.done():
            return  # the first call answered first
        self._hedge_wins.inc()
        self._won(started)
        self._land(workflow_id, flight, fetched)
        primary.cancel()

    async def _second_many(self, flights: dict[str, Flight]) -> None:
        """The hedge of a batch call: the parts it answers first land from it."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                fetched = await self._client.fetch_many(list(flights))
        except (PartFailure, TimeoutError):
            return  # the first call still stands
        won = [w for w, f in flights.items() if not f.done()]
        if not won:
            return
        self._hedge_wins.inc()
        self._won(started)
        for workflow_id in won:
            self._land(workflow_id, flights[workflow_id], fetched[workflow_id])
