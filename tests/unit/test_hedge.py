"""LatencyWindow (recent latencies, nearest-rank percentile) and HedgeBudget (token bucket)."""

from __future__ import annotations

import random

import pytest

from aggregator._hedge import HedgeBudget, LatencyWindow


def test_no_percentile_before_min_samples() -> None:
    window = LatencyWindow(size=100, min_samples=5)
    for ms in range(4):
        window.add(ms / 1000)
    assert window.percentile(100) is None
    assert window.percentile(50) is None
    window.add(0.004)
    assert window.percentile(100) == 0.004


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(0, 1), (1, 1), (50, 10), (90, 18), (95, 19), (99, 20), (100, 20)],
)
def test_percentile_of_one_to_twenty(pct: float, expected: int) -> None:
    window = LatencyWindow(size=100, min_samples=20)
    for value in [7, 3, 20, 1, 15, 9, 12, 2, 18, 5, 11, 4, 19, 6, 14, 8, 17, 10, 16, 13]:  # 1..20, shuffled
        window.add(float(value))
    assert window.percentile(pct) == float(expected)


def test_window_keeps_only_the_most_recent_samples() -> None:
    window = LatencyWindow(size=3, min_samples=3)
    for value in (100.0, 200.0, 300.0, 1.0, 2.0, 3.0):
        window.add(value)
    assert window.percentile(100) == 3.0
    assert window.percentile(1) == 1.0


def test_median_of_five_is_the_middle_sample() -> None:
    window = LatencyWindow(size=10, min_samples=5)
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        window.add(value)
    assert window.percentile(50) == 3.0


def test_budget_starts_empty() -> None:
    budget = HedgeBudget(ratio=0.5)
    assert budget.available is False
    assert budget.spend() is False


def test_budget_earns_ratio_per_call_and_spends_one_per_hedge() -> None:
    budget = HedgeBudget(ratio=0.25)
    for _ in range(3):
        budget.earn()
    assert budget.available is False
    budget.earn()
    assert budget.available is True
    assert budget.spend() is True
    assert budget.available is False
    assert budget.spend() is False


def test_hedges_never_exceed_ratio_of_calls() -> None:
    budget = HedgeBudget(ratio=0.05)
    spent = 0
    for _ in range(1000):
        budget.earn()
        if budget.spend():
            spent += 1
    assert spent == 50


def test_burst_caps_the_saved_up_tokens() -> None:
    budget = HedgeBudget(ratio=1.0, burst=3.0)
    for _ in range(100):
        budget.earn()
    assert [budget.spend() for _ in range(5)] == [True, True, True, False, False]


def test_zero_ratio_never_hedges() -> None:
    budget = HedgeBudget(ratio=0.0)
    for _ in range(1000):
        budget.earn()
    assert budget.available is False
    assert budget.spend() is False


def test_ten_calls_at_ratio_one_tenth_earn_one_hedge() -> None:
    budget = HedgeBudget(ratio=0.1)
    for _ in range(10):
        budget.earn()
    assert budget.spend() is True


def test_the_generation_changes_whenever_the_percentiles_can() -> None:
    """Hedging remembers its delay per generation: a percentile never changes without a new one."""
    rng = random.Random(7)
    window = LatencyWindow(size=64, min_samples=8)
    seen: dict[int, tuple[float | None, ...]] = {}
    for _ in range(500):
        window.add(rng.expovariate(100))
        generation = window.refresh()
        values = tuple(window.percentile(p) for p in (50, 95, 99))
        if generation is None:
            assert values == (None, None, None)
            continue
        assert seen.setdefault(generation, values) == values
    assert len(seen) > 500 // 16
