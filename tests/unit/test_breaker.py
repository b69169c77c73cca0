"""CircuitBreaker: closed → open after N consecutive failures → one half-open probe → closed."""

from __future__ import annotations

import types

import pytest

from aggregator import _breaker
from aggregator._breaker import BreakerState, CircuitBreaker


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state (read through a call, so the type checker does not narrow it between calls)."""
    return breaker.state


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Replaces the ``time`` the breaker module sees (only that module's name, not the stdlib)."""
    fake = Clock()
    monkeypatch.setattr(_breaker, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_starts_closed_and_allows_every_call(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=3, reset_s=2.0)
    assert state(breaker) == "closed"
    assert [breaker.allow() for _ in range(5)] == [True] * 5
    assert state(breaker) == "closed"


def test_opens_at_the_threshold_and_refuses_calls(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=3, reset_s=2.0)
    breaker.failure()
    breaker.failure()
    assert state(breaker) == "closed"
    assert breaker.allow() is True
    breaker.failure()
    assert state(breaker) == "open"
    assert breaker.allow() is False
    clock.now += 1.999
    assert breaker.allow() is False
    assert state(breaker) == "open"


def test_success_resets_the_count_of_consecutive_failures(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=3, reset_s=2.0)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert state(breaker) == "closed"
    breaker.failure()
    assert state(breaker) == "open"


def test_half_open_after_the_cool_down_lets_exactly_one_probe(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, reset_s=2.0)
    breaker.failure()
    assert state(breaker) == "open"
    clock.now += 2.0
    assert breaker.allow() is True
    assert state(breaker) == "half_open"
    assert breaker.allow() is False
    assert breaker.allow() is False
    assert state(breaker) == "half_open"


def test_successful_probe_closes(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=2, reset_s=1.0)
    breaker.failure()
    breaker.failure()
    clock.now += 1.5
    assert breaker.allow() is True
    breaker.success()
    assert state(breaker) == "closed"
    assert [breaker.allow() for _ in range(3)] == [True, True, True]
    # The count started over: one failure no longer opens a threshold-2 breaker.
    breaker.failure()
    assert state(breaker) == "closed"


def test_failed_probe_reopens_at_once_for_a_full_cool_down(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=5, reset_s=2.0)
    for _ in range(5):
        breaker.failure()
    clock.now += 2.0
    assert breaker.allow() is True
    breaker.failure()  # one failure is enough in half-open, whatever the threshold
    assert state(breaker) == "open"
    assert breaker.allow() is False
    clock.now += 1.0
    assert breaker.allow() is False  # the cool-down restarted at the failed probe
    clock.now += 1.0
    assert breaker.allow() is True
    assert state(breaker) == "half_open"


def test_release_lets_another_probe_go(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, reset_s=0.5)
    breaker.failure()
    clock.now += 0.5
    assert breaker.allow() is True
    assert breaker.allow() is False
    breaker.release()
    assert state(breaker) == "half_open"
    assert breaker.allow() is True
    assert breaker.allow() is False
