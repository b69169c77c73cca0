"""``python -m benchmarks mapping`` writes its three target rows (shape only, never speed).

A tiny run, in-process, into a temporary directory: one round of each part, a fraction of a
second each, so the test costs about the start-up of its processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregator.definition import parse_definition
from benchmarks import __main__ as cli
from benchmarks import mapping

from ..support import needs_mosquitto

TINY = mapping.Scale(rounds=1, closed_s=0.3, open_s=0.3, open_rate=30.0, events_s=1.0, trip_rate=4.0)


@needs_mosquitto  # the events row starts Mosquitto
@pytest.mark.timeout(120)
def test_mapping_run_writes_three_rows_with_ratios_and_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON has the three rows, each with a numeric ratio and a met/missed flag; the table shows them."""
    monkeypatch.setattr(mapping, "QUICK", TINY)
    assert cli.main(["mapping", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["quick"] is True
    assert set(results) == {"meta", "mapping"}
    targets = results["mapping"]["targets"]
    assert set(targets) == {
        "mapped_cpu_per_cold_view",
        "mapped_cold_throughput_c16",
        "mapped_events_served_without_call",
    }
    for name, row in targets.items():
        assert {"figure", "value", "reference", "unit", "ratio", "target", "met"} <= set(row), name
        assert isinstance(row["ratio"], int | float), name
        assert row["ratio"] > 0, name  # also false for NaN
        assert isinstance(row["met"], bool), name
    events = results["mapping"]["events"]
    assert events["reads"] > 0
    assert events["writes"] > 0
    table = (tmp_path / "results.md").read_text()
    for row in targets.values():
        assert f"| {row['figure']} |" in table
        assert f"{row['target']}: {'met' if row['met'] else '**MISSED**'} |" in table


def test_contract_definition_drops_only_the_mapping_tables() -> None:
    """The contract reference's definition: trip.toml's participants, states, rules and settings, no mappings."""
    mapped = parse_definition(mapping.trip_toml(), path="trip.toml")
    plain = parse_definition(mapping.contract_definition(mapping.trip_toml()), path="trip-contract.toml")
    assert not any(p.mapped for p in plain.participants.values())
    assert all(p.mapped for p in mapped.participants.values())
    assert {n: p.states for n, p in plain.participants.items()} == {
        n: p.states for n, p in mapped.participants.items()
    }
    assert (plain.rules, plain.orderings, plain.settings) == (mapped.rules, mapped.orderings, mapped.settings)
