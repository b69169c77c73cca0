"""A few listing scans at once: the bound on concurrent ``GET /summary`` and fleet pages.

A summary goes through up to 20,000 listed workflows (or 10 s) and a fleet page through up to
2,000 (or 5 s), each a string of calls to the initiator's listing and to every participant's
batch endpoint: a burst of them multiplies the load on the participants. So the HTTP API (both
servers, through :mod:`aggregator.api`) runs at most :data:`MAX_SUMMARIES` summaries and
:data:`MAX_PAGES` fleet pages at once for each aggregator (each worker of ``serve --workers N``
is one); a stalled list (``GET /workflows?stalled=true``, up to 10,000 listed workflows) takes
a fleet page's slot. A request past the bound waits up to :data:`WAIT_S` for a running one to end, so that
a dashboard refreshing a few panels together is served; then it is refused with
:class:`TooManyScans` (a 429 problem) whose ``Retry-After`` is the time until the oldest
running one reaches its time budget (at least 1 s). A request refused on its parameters (400),
or one that has no listing to scan (400, 501, 503), is refused before it waits. The Python API (:meth:`Aggregator.summary`, :meth:`Aggregator.query`)
and redrive jobs are not bound here: the program that calls them, or the jobs' own bound, is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

from .errors import TooManyScans

#: Summaries, and fleet pages, running at once per aggregator.
MAX_SUMMARIES = 2
MAX_PAGES = 4
#: How long a request past the bound waits for a running one to end before its 429.
WAIT_S = 1.0


class Slots:
    """At most ``size`` scans of one kind at once (see the module docstring)."""

    def __init__(self, what: str, size: int, budget_s: Callable[[], float]) -> None:
        """``what`` names the scans in the 429's detail; ``budget_s`` gives their time budget."""
        self.what = what
        self.size = size
        self._budget_s = budget_s
        self._free = asyncio.Semaphore(size)
        self._started: list[float] = []
        """When each running scan took its slot (``time.monotonic``)."""

    @property
    def running(self) -> int:
        return len(self._started)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """A slot for the block (:class:`TooManyScans` if none frees within :data:`WAIT_S`);
        freed however the block ends."""
        try:
            async with asyncio.timeout(WAIT_S):
                await self._free.acquire()
        except TimeoutError:
            raise TooManyScans(self.what, self.size, self.retry_after_s()) from None
        started = time.monotonic()
        self._started.append(started)
        try:
            yield
        finally:
            self._started.remove(started)
            self._free.release()

    def retry_after_s(self) -> int:
        """Whole seconds until the oldest running scan reaches its time budget, at least 1."""
        if not self._started:
            return 1
        left = min(self._started) + self._budget_s() - time.monotonic()
        return max(1, math.ceil(left))
