"""When reads go out, and which go together (the DataLoader pattern, with a wait under load).

Reads of *different* workflows share calls, through the participant's batch endpoint, up to
``chunk`` ids per call: those asked for in the same turn of the event loop and, under load,
those that come while a call to the participant is out. When new reads arrive less than
``wait_s`` apart (a moving average) and a call is in flight, a new read waits for company
until the calls in flight have landed or ``wait_s`` passes, whichever comes first. A read
with no call in flight, or when reads come seldom, goes out at the end of its turn: no wait
at low load, and under load the more reads arrive together, the fewer calls (and the less
CPU, here and at the participant) each costs.

:class:`Batcher` only decides; what a call is, and how its answer lands, is its ``send``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: The weight of the newest gap in the moving average of the time between two new reads.
_GAP_WEIGHT = 0.2


class Batcher:
    """Groups one participant's new reads into calls, and sends each group through ``send``.

    ``send(ids)`` starts one call for ``ids`` (one id: a single call) and says whether it did
    (False: nothing was started, e.g. the aggregator closed); :meth:`landed` is told when a call
    it started has landed.
    """

    def __init__(self, send: Callable[[list[str]], bool], *, wait_s: float, chunk: int) -> None:
        """Made inside the event loop it will run in."""
        self._loop = asyncio.get_running_loop()
        self._send = send
        self._wait_s = wait_s
        self._chunk = chunk
        self._pending: list[str] = []
        """Ids waiting for the next flush."""
        self._flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
        """The flush scheduled for the pending ids, if any."""
        self._waiting = False
        """Whether that flush is the wait for company (a timer), which a landing call cuts short.
        A flag, not the handle's type: uvloop's timer handles are not ``asyncio.TimerHandle``s."""
        self.in_flight = 0
        """Calls sent and not yet landed (hedges not counted)."""
        self._last_add: float | None = None
        self._gap_s = 0.0
        """A moving average of the time between two new reads (each gap capped at a second)."""

    def add(self, workflow_id: str) -> None:
        """A new read: it goes out with the next flush (at the end of this turn, or after a wait)."""
        self._pending.append(workflow_id)
        loop = self._loop
        now = loop.time()
        if self._last_add is not None:
            gap = min(now - self._last_add, 1.0)
            self._gap_s += _GAP_WEIGHT * (gap - self._gap_s)
        self._last_add = now
        if self._flush_at is None:
            if self.in_flight and self._gap_s < self._wait_s:
                # A call is out and reads come faster than the wait: others will join this one.
                self._flush_at = loop.call_later(self._wait_s, self._flush)
                self._waiting = True
            else:  # at the end of this turn, with the reads already scheduled in it
                self._flush_at = loop.call_soon(self._flush)

    def landed(self) -> None:
        """A call landed: reads waiting for company go out now if no other call is in flight."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._waiting and self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = self._loop.call_soon(self._flush)
            self._waiting = False

    def _flush(self) -> None:
        """Send the pending reads, ``chunk`` ids per call."""
        pending, self._pending, self._flush_at = self._pending, [], None
        self._waiting = False
        chunk = self._chunk
        for start in range(0, len(pending), chunk):
            if self._send(pending[start : start + chunk]):
                self.in_flight += 1
