"""Tail latency: one participant slow 2% of the time, hedging on against hedging off.

Two sagas: participants that answer in about 5 ms (±2), and participants that answer at once
(loopback, well under a millisecond), where the hedge delay (the participant's p95) is a
fraction of a millisecond and only a clock finer than one can time it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._cluster import Cluster, drive, metric_sum, status_requests
from ._stats import ratio, summary

SLOW_RATE = 0.02
SLOW_MS = 100.0


def run(*, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    """Views of a four-participant saga where payment answers 100 ms late 2% of the time."""
    with Cluster() as cluster:
        cluster.start_broker()
        slow = {"payment": {"slow_rate": SLOW_RATE, "slow_ms": SLOW_MS}}
        (urls,) = cluster.saga(prefix="t-", latency_ms=5, jitter_ms=2, only=slow)
        (bare,) = cluster.saga(prefix="z-", only=slow)
        cluster.place([urls], ["bench-1"])
        cluster.place([bare], ["bench-1"])
        out: dict[str, Any] = {"slow_rate": SLOW_RATE, "slow_ms": SLOW_MS}
        out.update(_hedging(cluster, urls, "tail", quick=quick, progress=progress))
        out["zero_delay"] = _hedging(cluster, bare, "tail-zero", quick=quick, progress=progress)
        return out


def _hedging(
    cluster: Cluster, urls: dict[str, str], name: str, *, quick: bool, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Open-loop views of ``bench-1`` through an aggregator without hedging, then one with it."""
    duration, rate = (0.5, 150) if quick else (20.0, 150)
    out: dict[str, Any] = {}
    samples = {}
    for hedge in (False, True):
        label = "hedged" if hedge else "unhedged"
        progress(f"{name}: {label}")
        agg = cluster.aggregator(urls, name=f"agg-{name}-{label}", freshness="on-demand", hedge=hedge)
        drive({"mode": "open", "url": f"{agg}/workflows/bench-1", "rate": 100, "duration": 0.5})  # warm p95
        before = status_requests([urls["payment"]])[urls["payment"]]
        hedges_before = metric_sum(agg, "aggregator_hedges_total")
        wins_before = metric_sum(agg, "aggregator_hedge_wins_total")
        result = drive(
            {"mode": "open", "url": f"{agg}/workflows/bench-1", "rate": rate, "duration": duration}
        )
        calls = status_requests([urls["payment"]])[urls["payment"]] - before
        hedges = metric_sum(agg, "aggregator_hedges_total") - hedges_before
        samples[label] = result["latencies_ms"]
        out[label] = {
            "stats": summary(result["latencies_ms"]),
            "views": result["count"],
            "payment_calls": calls,
            "hedges": hedges,
            "hedge_wins": metric_sum(agg, "aggregator_hedge_wins_total") - wins_before,
            "extra_requests_pct": round(100 * hedges / max(1, result["count"]), 2),
        }
    out["p99_hedged_vs_unhedged"] = ratio(out["hedged"]["stats"]["p99"], out["unhedged"]["stats"]["p99"])
    out["samples"] = samples
    return out
