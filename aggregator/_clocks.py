"""Participants' clock offsets, measured from what the aggregator already receives.

A participant's *offset* is its clock minus the aggregator's. Every time it says what time it
is, it bounds that offset, the way NTP does:

* an answer's ``Date`` header (whole seconds) was written while the request was in flight: the
  participant's clock then read between ``Date`` and ``Date + 1``, and the aggregator's between
  the request's send and receive times, so the offset lies in
  ``[Date - received, Date + 1 - sent]``;
* an event's ``time`` (and a watermark's) was stamped before the event arrived: the offset is
  at least ``time - arrival``. Events come often and quickly, so that lower bound is tight (to
  the quickest delivery), but they never bound the offset from above.

The tightest bounds seen are kept over the last two windows of :data:`WINDOW_S` (a clock that
drifts or is stepped is followed: bounds that contradict a new one are dropped). Answers alone
narrow the interval slowly (their ``Date`` has one-second steps), so the aggregator also asks
each participant for a ``Date`` at chosen instants (:func:`probe_clocks`): each probe is timed
so that the participant's second ticks over at the middle of the interval, and halves it.

What is corrected, and by how much:

* :meth:`ClockOffset.estimate`: 0 while the bounds allow it (clocks that agree as far as can be
  measured are left alone), else the middle of the interval (off by half its width at most),
  or its one bound when events alone have bounded it. Ages, ``stalled``, the ``step`` of the
  last change and the timeline use it.
* :meth:`ClockOffset.for_staleness`: the interval's upper bound once an answer has given one:
  an event's time, corrected by it, is never later than the instant it was really produced, so
  ``staleness_ms`` may overstate (by the interval's width at most), never understate.

An event's time only ever tightens the interval: one that contradicts what answers measured
(forged, or from a clock that jumped) is set aside until the next answer or probe settles it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from .metrics import Metrics

log = logging.getLogger("aggregator.clocks")

#: Bounds older than two windows of this many seconds are forgotten.
WINDOW_S = 60.0
#: Offsets past this many seconds either way are taken for a broken clock or a forged time, not kept.
MAX_OFFSET_S = 86_400.0
#: An offset this large or larger is logged as a WARNING (once, until it is back under half of it).
WARN_S = 1.0
#: Corrections smaller than this are not applied (the rounding of the times being compared).
MIN_CORRECTION_S = 0.001
#: An answer's ``Date`` is read at most this often per participant (reads are the hot path).
ANSWER_EVERY_S = 0.05

_INF = math.inf


class ClockOffset:
    """One participant's clock offset (its clock minus ours, seconds), as an interval of bounds."""

    __slots__ = ("_hi", "_lo", "_prev", "_started", "_window_s")

    def __init__(self, *, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._started = time.monotonic()
        self._lo, self._hi = -_INF, _INF
        """The current window's bounds."""
        self._prev: tuple[float, float] = (-_INF, _INF)
        """The previous window's bounds."""

    def bound(self, lo: float, hi: float = _INF) -> bool:
        """Narrow the interval by one measurement: the offset lies in ``[lo, hi]``. Whether the
        interval changed (most measurements tighten nothing)."""
        if not (-MAX_OFFSET_S < lo <= MAX_OFFSET_S or -MAX_OFFSET_S <= hi < MAX_OFFSET_S):
            return False
        now = time.monotonic()
        rotated = now - self._started >= self._window_s
        if rotated:
            self._prev = (self._lo, self._hi)
            self._lo, self._hi, self._started = -_INF, _INF, now
        new_lo, new_hi = max(self._lo, lo), min(self._hi, hi)
        if new_lo > new_hi:
            if hi == _INF:
                # An event's time alone (perhaps forged, or from a clock that jumped) does not
                # overturn what answers measured: the next answer or probe settles it.
                return rotated
            # An answer contradicts: the clock moved, and what was measured before no longer holds.
            self._prev = (-_INF, _INF)
            new_lo, new_hi, self._started = lo, hi, now
        changed = rotated or new_lo != self._lo or new_hi != self._hi
        self._lo, self._hi = new_lo, new_hi
        return changed

    @property
    def bounds(self) -> tuple[float, float]:
        """The interval the offset lies in, from both windows (``-inf``/``inf`` where unbounded)."""
        lo, hi = max(self._lo, self._prev[0]), min(self._hi, self._prev[1])
        if lo <= hi:
            return lo, hi
        # The windows disagree: the newer one, unless only events bound it (see bound()).
        return (self._lo, self._hi) if self._hi < _INF or self._prev[1] == _INF else self._prev

    @property
    def measured(self) -> bool:
        """Whether anything bounds the offset yet."""
        lo, hi = self.bounds
        return lo > -_INF or hi < _INF

    @property
    def estimate(self) -> float:
        """0 while the bounds allow it (or nothing is measured); else the middle of the interval,
        or its one finite bound."""
        lo, hi = self.bounds
        if lo <= 0 <= hi:
            return 0.0
        if lo == -_INF or hi == _INF:
            return lo if hi == _INF else hi
        return (lo + hi) / 2

    @property
    def for_staleness(self) -> float:
        """The offset to correct event times by for ``staleness_ms``: the interval's upper bound
        once one is known (never less than the true offset, so an event never looks fresher than
        it is); until then its lower bound if that is above 0, else 0."""
        lo, hi = self.bounds
        return hi if hi < _INF else max(lo, 0.0)


class Clocks:
    """Every participant's :class:`ClockOffset`, fed by answers and events, and what they correct."""

    def __init__(self, participants: list[str], *, metrics: Metrics, warn_s: float = WARN_S) -> None:
        self._offsets = {name: ClockOffset() for name in participants}
        self._metrics = metrics
        self._warn_s = warn_s
        self._warned: set[str] = set()
        self._dates: dict[str, tuple[str, float]] = {}
        """Per participant, the last ``Date`` header read and its time (they change once a second)."""
        self._answered: dict[str, float] = dict.fromkeys(participants, -_INF)
        """Per participant, ``time.monotonic()`` of the last answer whose ``Date`` was read."""
        self.corrections: dict[str, float] = {}
        """The participants whose :attr:`ClockOffset.estimate` is applied (at least
        :data:`MIN_CORRECTION_S`), with it: empty while every clock agrees with ours."""
        self.stale_corrections: dict[str, float] = {}
        """The same for :attr:`ClockOffset.for_staleness`."""

    def __getitem__(self, participant: str) -> ClockOffset:
        return self._offsets[participant]

    def answered(self, participant: str, sent: float, received: float, headers: Mapping[str, str]) -> None:
        """An answer with these ``headers`` came back: ``sent`` and ``received`` are
        ``time.time()`` around the call. Its ``Date`` is read at most every :data:`ANSWER_EVERY_S`."""
        now = time.monotonic()
        if now - self._answered.get(participant, -_INF) < ANSWER_EVERY_S:
            return
        date = headers.get("Date")
        if date is not None:
            self._answered[participant] = now
            self.sample_date(participant, sent, received, date)

    def sample_date(self, participant: str, sent: float, received: float, date: str) -> None:
        """Bound ``participant``'s offset by a ``Date`` header read between ``sent`` and ``received``."""
        last = self._dates.get(participant)
        if last is not None and last[0] == date:
            at = last[1]
        else:
            parsed = email.utils.parsedate_tz(date)
            if parsed is None:
                return
            try:
                at = float(email.utils.mktime_tz(parsed))
            except (ValueError, OverflowError):  # a year no clock reads: not a measurement
                return
            self._dates[participant] = (date, at)
        self._bound(participant, at - received, at + 1.0 - sent)

    def stamped(self, participant: str, at: float, arrived: float) -> None:
        """``participant`` stamped something ``at`` (its clock, POSIX seconds) that arrived here at
        ``arrived`` (``time.time()``): an event's or a watermark's ``time``."""
        self._bound(participant, at - arrived)

    def _bound(self, participant: str, lo: float, hi: float = _INF) -> None:
        offset = self._offsets.get(participant)
        if offset is None or not offset.bound(lo, hi):
            return
        estimate = offset.estimate
        self._apply(self.corrections, participant, estimate)
        self._apply(self.stale_corrections, participant, offset.for_staleness)
        self._metrics.clock_offset.labels(participant).set(estimate)
        if abs(estimate) >= self._warn_s and participant not in self._warned:
            self._warned.add(participant)
            lo, hi = offset.bounds
            log.warning(
                "%s's clock is %s this aggregator's by %.3f s (measured between %s and %s s): "
                "its ages, stalls and timeline entries are corrected by it",
                participant,
                "ahead of" if estimate > 0 else "behind",
                abs(estimate),
                _seconds(lo),
                _seconds(hi),
            )
        elif abs(estimate) < self._warn_s / 2 and participant in self._warned:
            self._warned.discard(participant)
            log.info("%s's clock is back within %.3f s of this aggregator's", participant, self._warn_s / 2)

    @staticmethod
    def _apply(table: dict[str, float], participant: str, offset: float) -> None:
        if abs(offset) >= MIN_CORRECTION_S:
            table[participant] = offset
        else:
            table.pop(participant, None)

    def snapshot(self) -> dict[str, float | None]:
        """Per participant, its estimated offset in milliseconds (None until measured)."""
        return {
            name: round(offset.estimate * 1000, 3) if offset.measured else None
            for name, offset in self._offsets.items()
        }

    def probe_at(self, participant: str, now: float) -> float:
        """When (``time.time()``) to ask ``participant`` for its ``Date`` next, to halve its interval.

        The instant at which its clock is expected to tick over to a new second if the offset is
        the middle of the interval: the answer's ``Date`` then moves one bound to about there.
        """
        lo, hi = self[participant].bounds
        if lo == -_INF and hi == _INF:
            return now
        middle = (lo + hi) / 2 if lo > -_INF and hi < _INF else (lo + 0.5 if lo > -_INF else hi - 0.5)
        at = math.ceil(now + middle) - middle
        return at if at - now >= 0.05 else at + 1.0


def _seconds(value: float) -> str:
    return "?" if math.isinf(value) else f"{value:.3f}"


#: Probing stops for a participant once its interval is this narrow, and starts again (every
#: :data:`PROBE_EVERY_S`) to follow drift.
PROBE_WIDTH_S = 0.02
PROBE_EVERY_S = 30.0
#: The fewest seconds between two probes of one participant while its interval narrows.
PROBE_GAP_S = 0.5


async def probe_clocks(
    clocks: Clocks,
    probes: Mapping[str, Callable[[], Coroutine[Any, Any, str | None]]],
    *,
    always: bool,
) -> None:
    """Ask each participant for its ``Date`` (``probes[name]()``, which returns the header, or
    None) until its offset's interval is :data:`PROBE_WIDTH_S` wide, then every
    :data:`PROBE_EVERY_S`; runs until cancelled. With ``always`` false, only participants
    measured off (reads bound the others' offsets well enough to see that they agree). A probe
    that fails is tried again after 1 s, doubling to :data:`PROBE_EVERY_S`: reads and the breaker
    deal with participants that are down."""

    async def one(name: str, probe: Callable[[], Coroutine[Any, Any, str | None]]) -> None:
        offset = clocks[name]
        due = time.monotonic()
        failed = 0
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not always and offset.estimate == 0.0:
                due = time.monotonic() + 1.0
                continue
            at = clocks.probe_at(name, time.time())
            await asyncio.sleep(max(0.0, at - time.time()))
            sent = time.time()
            try:
                date = await probe()
                if date is not None:
                    clocks.sample_date(name, sent, time.time(), date)
            except Exception:  # down, or answering garbage: the reads say so
                failed += 1
                due = time.monotonic() + min(PROBE_EVERY_S, 2.0 ** (failed - 1))
                continue
            failed = 0
            lo, hi = offset.bounds
            due = time.monotonic() + (PROBE_EVERY_S if hi - lo <= PROBE_WIDTH_S else PROBE_GAP_S)

    await asyncio.gather(*(one(name, probe) for name, probe in probes.items()))
