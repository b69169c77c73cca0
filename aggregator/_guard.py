"""Every call to one participant behind its circuit breaker and timeout, timed and counted.

Reads, batches and timelines go through a :class:`Guard` (a hedge, under its own timeout,
reports only its win; the stall scan's listing and redrive's republish are bounded by the
client alone, outside the breaker). A call that succeeds closes the breaker and adds its
latency to the window hedging reads its percentile from; one that fails counts towards
opening it; one that is cancelled (a reader's deadline does not cancel a call, a winning
hedge does) gives no verdict. Every change of the breaker's state is logged once, shown on
the ``aggregator_breaker_state`` gauge and reported to ``changed``.

The guard also keeps how the participant last answered (:attr:`Guard.last`: ``None`` before
any call, ``ok`` or ``failed``), from reads and from start-up probes (:meth:`Guard.probe`,
which neither counts towards the breaker nor waits for it), for ``/readyz`` to report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from ._breaker import BreakerState, CircuitBreaker
from ._hedge import LatencyWindow
from ._timers import Timed, Timers
from .definition import Settings
from .errors import PartFailure
from .metrics import Metrics

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: How a participant last answered: ``ok`` (an answer, even one that did not map), ``failed``
#: (no answer, a timeout, a 5xx, an answer that is not a status).
LastAnswer = Literal["ok", "failed"]

#: Outcomes of a call, as counted by ``aggregator_participant_calls_total``.
OUTCOMES = ("ok", "timeout", "unavailable", "bad_response", "circuit_open", "cancelled")


class _Expiry(Timed):
    """One call's place in its :class:`Deadlines` (what ``asyncio.Timeout`` keeps of a block)."""

    __slots__ = ("cancelling", "expired", "left", "task")

    def __init__(self, when: float, task: asyncio.Task[object], cancelling: int) -> None:
        super().__init__(when)
        self.task: asyncio.Task[object] | None = task
        """None once the call ended: a place kept until those before it go holds no task."""
        self.cancelling = cancelling
        """How many cancellations the task had when the call started (``Task.cancelling()``)."""
        self.expired = False
        """The deadline came first: the task was cancelled for it."""
        self.left = False
        """The call ended (:meth:`Deadlines.leave`)."""


class Deadlines:
    """Timeouts of one length for many calls, on one timer of the event loop (:mod:`aggregator._timers`).

    ``asyncio.timeout`` arms a timer of the loop for each block and cancels it when the block
    ends, for a timeout that almost never fires. Here a deadline that comes cancels its call's
    task, as ``asyncio.timeout`` does, and the call that sees that cancellation turns it into a
    timeout by the same test (:meth:`leave`), so a cancellation from elsewhere stays one.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._timers: Timers[_Expiry] = Timers(_expire)

    def enter(self) -> _Expiry:
        """The running task's call starts: its deadline is ``timeout_s`` from now."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a call's timeout must be entered inside a task")
        return self._timers.add(_Expiry(loop.time() + self.timeout_s, task, task.cancelling()))

    def leave(self, expiry: _Expiry) -> bool:
        """The call ended (once; later calls are no-ops). Whether a cancellation it ended with was
        its deadline's and no one else's (``asyncio.Timeout.__aexit__``'s test)."""
        if expiry.left:
            return False
        expiry.left = True
        self._timers.discard(expiry)
        task, expiry.task = expiry.task, None
        return expiry.expired and task is not None and task.uncancel() <= expiry.cancelling

    def __len__(self) -> int:
        """Calls whose place is still kept (for tests: ended calls' places are dropped)."""
        return len(self._timers)


def _expire(expiry: _Expiry) -> None:
    """A call's deadline came: cancel its task (:meth:`Deadlines.leave` makes it a timeout)."""
    if expiry.task is not None:  # always, for a call that has not ended
        expiry.expired = True
        expiry.task.cancel()


class Guard:
    """One participant's breaker, timeout and call accounting."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        timeout_s: float,
        settings: Settings,
        metrics: Metrics,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        """The participant's own timeout: no call to it outlives this."""
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures, reset_s=settings.breaker_reset_ms / 1000
        )
        self._deadlines = Deadlines(timeout_s)
        self.window = LatencyWindow()
        """Latencies of the participant's successful calls (hedges read their percentile)."""
        self._url = url
        self._reset_ms = settings.breaker_reset_ms
        self._metrics = metrics
        self._changed = changed
        # Label children resolved once: these are counted on every call.
        self._calls = {outcome: metrics.calls.labels(name, outcome) for outcome in OUTCOMES}
        self._latency = metrics.latency.labels(name)
        self._shown: BreakerState = "closed"
        metrics.set_breaker(name, "closed")
        self.last: LastAnswer | None = None
        """How the participant answered its last call or probe; None before any."""

    @property
    def state(self) -> BreakerState:
        """The breaker's state: ``closed``, ``open`` or ``half_open``."""
        return self.breaker.state

    async def call(self, workflow_id: str | None, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call`` behind the breaker and the participant's timeout; count the outcome.

        Raises :class:`PartFailure`: ``circuit_open`` without calling, ``timeout``, or the call's own.
        """
        if not self.breaker.allow():
            self._calls["circuit_open"].inc()
            raise PartFailure(
                "circuit_open", "circuit breaker is open", participant=self.name, workflow_id=workflow_id
            )
        self._show()
        # perf_counter, not the loop's clock: uvloop's has 1 ms resolution and stands still within
        # a turn of the loop, so loopback calls (a fraction of a millisecond) would all last 0.
        started = time.perf_counter()
        outcome = "cancelled"
        # The participant's timeout, as asyncio.timeout would bound the call, on one shared timer.
        deadlines = self._deadlines
        expiry = deadlines.enter()
        try:
            try:
                result = await call()
            except asyncio.CancelledError:
                if deadlines.leave(expiry):
                    raise TimeoutError from None
                raise
            finally:
                deadlines.leave(expiry)
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            raise PartFailure(
                "timeout",
                f"no answer within {self.timeout_s * 1000:.0f} ms",
                participant=self.name,
                workflow_id=workflow_id,
            ) from None
        except PartFailure as exc:
            outcome = "ok" if exc.answered else exc.kind
            raise
        finally:
            if outcome == "ok":  # an answer that did not map is still an answer
                self.last = "ok"
                elapsed = time.perf_counter() - started
                self.breaker.success()
                self.window.add(elapsed)
                self._latency.observe(elapsed)
            elif outcome == "cancelled":
                self.breaker.release()
            else:
                self.last = "failed"
                self.breaker.failure()
            self._calls[outcome].inc()
            self._show()

    async def probe(self, call: Callable[[], Awaitable[object]], *, timeout_s: float) -> str | None:
        """Run ``call`` (a cheap request) within ``timeout_s`` and the participant's own timeout,
        outside the breaker; note how it answered in :attr:`last`. Returns why it failed, or None."""
        try:
            async with asyncio.timeout(min(timeout_s, self.timeout_s)):
                await call()
        except TimeoutError:
            reason: str | None = f"no answer within {min(timeout_s, self.timeout_s) * 1000:.0f} ms"
        except PartFailure as exc:
            reason = None if exc.answered else exc.detail
        else:
            reason = None
        self.last = "failed" if reason else "ok"
        return reason

    def won(self, started: float) -> None:
        """A hedge started at ``time.perf_counter()`` ``started`` answered first: its latency counts,
        and the participant answers."""
        self.last = "ok"
        self.window.add(time.perf_counter() - started)
        self.breaker.success()
        self._show()

    def _show(self) -> None:
        state = self.breaker.state
        if state == self._shown:
            return
        if state == "open" and self._shown == "closed":
            log.warning(
                "participant %s is failing (%s): its circuit is open, calls pause for %d ms",
                self.name,
                self._url,
                self._reset_ms,
            )
        elif state == "closed":
            log.info("participant %s answers again", self.name)
        self._shown = state
        self._metrics.set_breaker(self.name, state)
        self._changed()
