"""``python -m benchmarks asgi`` writes its two target rows (shape only, never speed).

A tiny run, in-process, into a temporary directory: one round of each row, a fraction of a
second each, so the test costs about the start-up of its processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import asgi

from ..support import needs_mosquitto

TINY = asgi.Scale(rounds=1, closed_s=0.3)


@needs_mosquitto  # the cache-hit row runs events mode on a Mosquitto of its own
@pytest.mark.timeout(90)
def test_asgi_run_writes_two_rows_with_ratios_and_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON has both rows (uvicorn beside aiohttp), each with a numeric ratio and a met/missed
    flag, CPU per view and p50 for both servers; the table shows them."""
    monkeypatch.setattr(asgi, "QUICK", TINY)
    assert cli.main(["asgi", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["quick"] is True
    assert set(results) == {"meta", "asgi"}
    measured = results["asgi"]
    for row in ("cold_c16", "cache_hit_c16"):
        assert set(measured[row]["median"]) == {"uvicorn", "aiohttp"}, row
        for server, figures in measured[row]["median"].items():
            assert figures["n"] > 0, (row, server)
            assert figures["cpu_ms_per_view"] > 0, (row, server)
            assert figures["p50"] > 0, (row, server)
    # Cache hits: no participant called, every lookup a hit (each id was read once before).
    for server in ("uvicorn", "aiohttp"):
        assert measured["cache_hit_c16"]["median"][server]["upstream_calls_per_view"] == 0, server
        assert measured["cache_hit_c16"]["hit_share"][server] == 1.0, server
        assert measured["cold_c16"]["median"][server]["upstream_calls_per_view"] > 0, server
    targets = measured["targets"]
    assert set(targets) == {"asgi_cold_throughput_c16", "asgi_cache_hit_throughput_c16"}
    for name, row in targets.items():
        assert {"figure", "value", "reference", "unit", "ratio", "target", "met"} <= set(row), name
        assert isinstance(row["ratio"], int | float), name
        assert row["ratio"] > 0, name  # also false for NaN
        assert isinstance(row["met"], bool), name
    table = (tmp_path / "results.md").read_text()
    for row in targets.values():
        assert f"| {row['figure']} |" in table
        assert f"{row['target']}: {'met' if row['met'] else '**MISSED**'} |" in table
