"""``python -m benchmarks latency|tail|staleness|faults --quick``: each benchmark, run alone as a user
would, writes every figure of its section, its Markdown rows and its plot (shape only, never speed).

One test per benchmark family: a failure names the benchmark, and each runs its own short quick
mode (``mapping``, ``asgi`` and ``compare`` have their own tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks._cluster import LIBFAKETIME

from ..support import needs_mosquitto
from . import run_quick


def _quick(which: str, out: Path, files: tuple[str, ...]) -> dict[str, Any]:
    """Run ``which`` in quick mode into ``out``; check ``files`` (results.json, results.md and
    the plots) are there and not empty; the results."""
    run_quick(which, out, timeout=170)
    for name in ("results.json", "results.md", *files):
        path = out / name
        assert path.exists(), name
        assert path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["quick"] is True
    assert set(results) == {"meta", which}
    return results


@needs_mosquitto  # the benchmarks start Mosquitto
@pytest.mark.timeout(180)
def test_latency_quick_has_every_figure_its_targets_and_its_plot(tmp_path: Path) -> None:
    """Cold views at N=4 and N=16 beside their four references, the zero-delay figures, the
    distinct-id closed loops, ``--workers 2``, and every target row with a ratio and a verdict."""
    lat = _quick("latency", tmp_path, ("latency_cdf.png",))["latency"]
    for n in ("cold_n4", "cold_n16"):
        assert set(lat[n]["stats"]) == {
            "direct_slowest", "aggregator", "naive_gather", "sequential", "bare_batching"
        }  # fmt: skip
        assert set(lat[n]["ratios"]) >= {
            "p50_vs_slowest_direct", "p50_vs_naive_gather", "p50_vs_sequential", "p50_vs_bare_batching"
        }  # fmt: skip
        assert lat[n]["stats"]["aggregator"]["n"] > 0
        assert lat[n]["stats"]["bare_batching"]["n"] > 0
    zero = lat["zero_delay"]
    assert set(zero) >= {"added_latency", "cache_hit", "throughput", "coalescing", "batch"}
    assert zero["coalescing"]["ttl"]["upstream_calls_per_participant"] == dict.fromkeys(
        ("order", "payment", "inventory", "shipping"), 1
    )
    assert zero["batch"]["upstream_calls_per_batch_per_participant"] == 1.0
    distinct = lat["cold_distinct"]
    assert distinct["ids"] == 400
    assert set(distinct["c16"]["median"]) == {"aggregator", "naive_gather", "bare_batching"}
    # The bare batching reference batches too: fewer participant calls per view than the naive gather's 4.
    assert distinct["c16"]["median"]["bare_batching"]["upstream_calls_per_view"] < 4
    assert set(distinct["c1"]["median"]) == {"direct_participant", "aggregator", "naive_gather"}
    assert set(distinct["cache_hit"]["median"]) == {"aggregator_events_hit", "plain_handler"}
    assert distinct["cache_hit"]["hit_share"] > 0.9  # every id was read once before: hits, not fetches
    assert distinct["c16"]["median"]["aggregator"]["cpu_ms_per_view"] > 0
    assert set(lat["workers"]["median"]) == {"workers_1", "workers_2"}
    assert lat["workers"]["worker_pids_seen"] == 2
    # Every target row is there, beside its reference, as a positive ratio with a verdict (quick runs
    # are too short to say whether a target is met, only that it is reported).
    targets = lat["targets"]
    assert set(targets) == {
        "cold_throughput_c16",
        "cold_p50_c16",
        "cold_throughput_c16_vs_bare",
        "cold_p50_c16_vs_bare",
        "added_latency_c1",
        "cpu_per_cold_view",
        "cache_hit_throughput",
        "workers_2_throughput",
    }
    for name, row in targets.items():
        assert {"figure", "value", "reference", "unit", "ratio", "target", "met"} <= set(row), name
        assert isinstance(row["ratio"], int | float), name
        assert row["ratio"] > 0, name  # also false for NaN
        assert isinstance(row["met"], bool), name
    table = (tmp_path / "results.md").read_text()
    assert "| figure | measured | reference (same run) | ratio | target |" in table
    for row in targets.values():
        assert f"| {row['figure']} |" in table
        assert f"{row['target']}: {'met' if row['met'] else '**MISSED**'} |" in table


@needs_mosquitto
@pytest.mark.timeout(120)
def test_tail_quick_compares_hedged_with_unhedged_and_plots_it(tmp_path: Path) -> None:
    """Hedging on against off, at 5 ms and at zero delay: the unhedged runs send no hedge."""
    tail = _quick("tail", tmp_path, ("tail_cdf.png",))["tail"]
    for run in (tail, tail["zero_delay"]):
        assert {"hedged", "unhedged", "p99_hedged_vs_unhedged"} <= set(run)
        assert run["unhedged"]["hedges"] == 0
        assert run["hedged"]["views"] > 0 and run["unhedged"]["views"] > 0


@needs_mosquitto
@pytest.mark.timeout(150)
def test_staleness_quick_is_calibrated_in_every_mode_and_plots_t_visibility(tmp_path: Path) -> None:
    """Every freshness mode (and, with libfaketime, events mode beside a clock five minutes off
    either way): reads, a t-visibility curve, and reported staleness never below the true age."""
    results = _quick("staleness", tmp_path, ("t_visibility.png",))["staleness"]
    quiet = results["quiet"]
    assert 1 <= quiet["quiet_s"] < 10 and quiet["staleness_ms"]["max"] >= 0 and isinstance(quiet["met"], bool)
    modes = results["modes"]
    expected = {"on-demand", "ttl-10ms", "ttl-100ms", "ttl-1000ms", "events"}
    if LIBFAKETIME is not None:
        expected |= {"events, payment +5 min", "events, payment -5 min"}
    assert set(modes) == expected
    for label, figures in modes.items():
        assert figures["reads"] > 0, label
        assert figures["calibration"] == 1.0, label  # reported staleness never below the true age
        assert set(figures["t_visibility"]) == {
            "0", "1", "2", "5", "10", "20", "50", "100", "200", "500", "1000"
        }, label  # fmt: skip
    assert modes["on-demand"]["served_without_participant_call"] == 0.0
    assert "calibration" in (tmp_path / "results.md").read_text()


@needs_mosquitto
@pytest.mark.timeout(150)
def test_faults_quick_finishes_every_saga_exactly_on_both_brokers(tmp_path: Path) -> None:
    """The broker SIGKILLed mid-load (Mosquitto), a NATS node lost with and without redrive: every
    saga finished, each event applied exactly once; no redrive when it is off."""
    faults = _quick("faults", tmp_path, ())["faults"]
    assert set(faults) == {"mosquitto", "nats", "nats_no_redrive"}
    for name, run in faults.items():
        assert run["sagas"] > 0, name
        assert (run["finished"], run["exact"]) == (run["sagas"], True), run
    assert faults["nats_no_redrive"]["workflows_redriven"] == 0
