"""Delayed hedging: a second request once a call outlives the participant's observed p95.

The budget is a token bucket: every call earns ``ratio`` of a token and a hedge spends one.
The bucket starts empty, so hedges never exceed ``ratio`` of the calls made so far; its burst
(10) lets slow calls that come in clusters all be hedged.
"""

from __future__ import annotations

import math
from collections import deque

#: Slack for float sums (ten shares of 0.1 make one token, not 0.9999999999999999).
_EPSILON = 1e-9
#: A full window re-sorts after this many new samples (a percentile is read on every call).
_RESORT_EVERY = 16


class LatencyWindow:
    """Recent successful call latencies of one participant."""

    def __init__(self, size: int = 256, min_samples: int = 20) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._min = min_samples
        self._size = size
        self._sorted: list[float] = []
        self._unsorted = 0
        """Samples added since ``_sorted`` was made."""

    def add(self, seconds: float) -> None:
        """Record one call's latency."""
        self._samples.append(seconds)
        self._unsorted += 1

    def percentile(self, pct: float) -> float | None:
        """The ``pct`` percentile, or None before there are enough samples to trust one.

        Exact while the window fills; once full, from a sorted copy refreshed every
        ``_RESORT_EVERY`` samples (a shift of at most a few samples out of 256).
        """
        if len(self._samples) < self._min:
            return None
        filling = len(self._samples) < self._size
        if self._unsorted and (filling or self._unsorted >= _RESORT_EVERY or not self._sorted):
            self._sorted = sorted(self._samples)
            self._unsorted = 0
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
