"""Percentiles and small summaries used by every benchmark."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p99, p99.9 and the count of a latency sample (ms)."""
    return {
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "p99.9": round(percentile(values, 99.9), 3),
        "n": len(values),
    }


def ratio(value: float, reference: float) -> float:
    """``value / reference`` rounded for reports (NaN when the reference is 0)."""
    return round(value / reference, 3) if reference else math.nan
