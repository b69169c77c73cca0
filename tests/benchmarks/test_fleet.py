"""``python -m benchmarks fleet`` writes its two target rows (shape only, never speed).

A tiny run into a temporary directory: a few hundred seeded workflows and three rounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregator import _fleet
from benchmarks import __main__ as cli
from benchmarks import fleet

from ..support import needs_mosquitto

TINY = fleet.Scale(workflows=400, rounds=3)


@pytest.mark.slow
@needs_mosquitto  # the participants need a broker, even if nothing is published
@pytest.mark.timeout(120)
def test_fleet_run_writes_two_rows_with_ratios_and_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both rows with a numeric ratio and a met/missed flag; pages of 100 in-progress views; a
    summary over all of them says it is complete; the table shows the rows."""
    monkeypatch.setattr(fleet, "QUICK", TINY)
    assert cli.main(["fleet", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    measured = results["fleet"]
    assert measured["workflows"] == 400 and measured["page"]["stats"]["n"] == 3
    assert measured["summary"]["scanned"] == 400 and measured["summary"]["complete"] is True
    assert measured["summary"]["says_so"] is True
    targets = measured["targets"]
    assert set(targets) == {"fleet_page_in_progress_100", "fleet_summary"}
    for name, row in targets.items():
        assert isinstance(row["ratio"], int | float) and row["ratio"] > 0, name
        assert isinstance(row["met"], bool), name
    table = (tmp_path / "results.md").read_text()
    for row in targets.values():
        assert f"| {row['figure']} |" in table
    assert measured["summary"]["budget"] == _fleet.SUMMARY_BUDGET
