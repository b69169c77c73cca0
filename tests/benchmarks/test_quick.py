"""``python -m benchmarks all --quick`` produces every figure and file (shape only, never speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..support import needs_mosquitto
from . import run_quick


@needs_mosquitto  # the benchmarks start Mosquitto
@pytest.mark.timeout(240)
def test_quick_run_writes_every_figure_table_and_plot(tmp_path: Path) -> None:
    """The benchmarks in quick mode (``mapping`` has its own smoke test): JSON with each figure, a
    Markdown table, three PNGs."""
    run_quick("latency tail staleness faults", tmp_path, timeout=230)
    for name in ("results.json", "results.md", "latency_cdf.png", "tail_cdf.png", "t_visibility.png"):
        path = tmp_path / name
        assert path.exists(), name
        assert path.stat().st_size > 0
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["quick"] is True
    lat = results["latency"]
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
    tail = results["tail"]
    assert {"hedged", "unhedged", "p99_hedged_vs_unhedged"} <= set(tail)
    assert tail["unhedged"]["hedges"] == 0
    faults = results["faults"]
    assert set(faults) == {"mosquitto", "nats", "nats_no_redrive"}
    for run in faults.values():  # every saga finished, each event applied exactly once, on both brokers
        assert (run["finished"], run["exact"]) == (run["sagas"], True), run
    assert faults["nats_no_redrive"]["workflows_redriven"] == 0
    quiet = results["staleness"]["quiet"]
    assert quiet["quiet_s"] == 3.0 and quiet["staleness_ms"]["max"] >= 0 and isinstance(quiet["met"], bool)
    modes = results["staleness"]["modes"]
    assert set(modes) == {"on-demand", "ttl-10ms", "ttl-100ms", "ttl-1000ms", "events"}
    for figures in modes.values():
        assert figures["reads"] > 0
        assert figures["calibration"] == 1.0  # reported staleness never below the true age
        assert set(figures["t_visibility"]) == {
            "0",
            "1",
            "2",
            "5",
            "10",
            "20",
            "50",
            "100",
            "200",
            "500",
            "1000",
        }
    assert modes["on-demand"]["served_without_participant_call"] == 0.0
    table = (tmp_path / "results.md").read_text()
    assert "| figure | measured | reference (same run) | ratio | target |" in table
    assert "calibration" in table
    for row in targets.values():
        assert f"| {row['figure']} |" in table
        assert f"{row['target']}: {'met' if row['met'] else '**MISSED**'} |" in table
