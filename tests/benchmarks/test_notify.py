"""``python -m benchmarks notify`` writes its target row (shape only, never speed).

A tiny run, in-process, into a temporary directory: a dozen sagas, so the test costs about the
start-up of its processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import notify

from ..support import needs_mosquitto

#: A benchmark run, even a tiny one, starts six processes: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

TINY = notify.Scale(duration_s=1.2, rate=10.0)


@needs_mosquitto  # the benchmark runs a Mosquitto of its own
@pytest.mark.timeout(90)
def test_notify_run_writes_its_row_with_the_reference_and_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every expected workflow event was received once, each matched to the part event that
    caused it; the row has the p99, its same-run reference, a ratio and a verdict; the table shows it."""
    monkeypatch.setattr(notify, "QUICK", TINY)
    assert cli.main(["notify", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"meta", "notify"}
    measured = results["notify"]
    assert measured["sagas"] == 12
    assert measured["events_received"] == measured["events_expected"] == 12 // 4 * 10
    assert measured["duplicates"] == measured["unmatched"] == measured["workflows_with_another_sequence"] == 0
    for figure in ("from_part_event_arrival_ms", "from_part_event_time_ms", "part_event_delivery_ms"):
        assert measured[figure]["n"] == measured["events_received"], figure
        assert measured[figure]["p99"] >= measured[figure]["p50"] >= 0, figure
    row = measured["targets"]["workflow_event_after_last_part_event"]
    assert row["value"] == measured["from_part_event_time_ms"]["p99"]
    assert row["reference"] == measured["part_event_delivery_ms"]["p99"] > 0
    assert row["target"] == "p99 ≤ 50 ms"
    assert isinstance(row["met"], bool)
    table = (tmp_path / "results.md").read_text()
    assert "workflow event at a subscriber after the last part's event" in table
