"""Many timers on one timer of the event loop: the participants' call timeouts and hedge delays.

A timer of the loop per call (``asyncio.timeout``, ``call_later``), cancelled when the call
ends, as nearly every call does, is under uvloop a libuv timer allocated, started, stopped and
closed, with a close callback of its own: per call, for a timeout or a hedge that almost never
fires. :class:`Timers` keeps such entries in a heap by the loop time they fall due, with one
timer of the loop armed for the first: an entry whose call ended is only marked done, and the
timer, when it fires, hands each entry whose time came to ``due`` in the order they fall due
(ties in the order added, as the loop's own timers would), drops those marked done, and arms
itself for the next. Used by :class:`aggregator._guard.Deadlines` and
:class:`aggregator._hedge.HedgeTimers`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar


class Timed:
    """An entry of :class:`Timers`: due at loop time ``when``, unless ``done`` by then."""

    __slots__ = ("done", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self.done = False
        """Discarded, or handed to ``due``: nothing (more) to do when its time comes."""


E = TypeVar("E", bound=Timed)


class Timers(Generic[E]):
    """Entries due at loop times, on one timer of the event loop (see the module docstring)."""

    def __init__(self, due: Callable[[E], None]) -> None:
        self._due = due
        self._heap: list[tuple[float, int, E]] = []
        self._order = itertools.count()
        """Ties in time fall due in the order they were added."""
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0
        """The loop time the timer was armed for."""

    def add(self, entry: E) -> E:
        """Hand ``entry`` to ``due`` at its time, unless it is discarded first."""
        heapq.heappush(self._heap, (entry.when, next(self._order), entry))
        if self._timer is None or entry.when < self._armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(asyncio.get_running_loop(), entry.when)
        return entry

    def discard(self, entry: E) -> None:
        """``entry``'s call ended: it is not due (a no-op once it was handed to ``due``)."""
        entry.done = True
        heap = self._heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)

    def __len__(self) -> int:
        """Entries kept (for tests: those marked done go once none due earlier is left)."""
        return len(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._armed_for = when
        self._timer = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        # The time the timer was armed for came, whatever the loop's clock (uvloop's has 1 ms
        # resolution) reads: as a timer of its own would, the entry due then fires.
        now = max(loop.time(), self._armed_for)
        heap = self._heap
        try:
            while heap and (heap[0][2].done or heap[0][0] <= now):
                entry = heapq.heappop(heap)[2]
                if not entry.done:
                    entry.done = True
                    self._due(entry)
        finally:  # an error out of ``due`` (the loop logs it) leaves the later entries armed
            if heap and self._timer is None:
                self._arm(loop, heap[0][0])
