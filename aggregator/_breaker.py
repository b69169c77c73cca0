"""A per-participant circuit breaker: closed → open after N failures → half-open probe → closed."""

from __future__ import annotations

import time
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Stops calling a participant that keeps failing, and probes it again after a pause."""

    def __init__(self, *, failures: int, reset_s: float) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state: BreakerState = "closed"

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open state: exactly one probe)."""
        if self.state == "closed":
            return True
        if self.state == "open" and time.monotonic() - self._opened_at >= self._reset_s:
            self.state = "half_open"
            self._probing = False
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        """A call succeeded: close."""
        self.state = "closed"
        self._failures = 0
        self._probing = False

    def release(self) -> None:
        """A call was abandoned (cancelled) without a verdict: let another probe go."""
        self._probing = False

    def failure(self) -> None:
        """A call failed: count it; open at the threshold, or straight away after a failed probe."""
        self._failures += 1
        if self.state == "half_open" or self._failures >= self._threshold:
            self.state = "open"
            self._opened_at = time.monotonic()
            self._probing = False
