"""Clock offsets (aggregator/_clocks.py) and the causal timeline (aggregator/_timeline.py), without a network."""

from __future__ import annotations

import logging
import math
import random
import time
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import pytest

from aggregator._clocks import ClockOffset, Clocks
from aggregator._timeline import causal_order, merge
from aggregator.definition import parse_definition
from aggregator.metrics import Metrics
from aggregator.schema import TimelineEntryBody
from aggregator.view import Part, build_view
from contract import iso as _iso


def iso(at: float) -> str:
    """POSIX seconds as the RFC 3339 text participants write."""
    return _iso(datetime.fromtimestamp(at, UTC))


def date_at(participant_time: float) -> str:
    """The ``Date`` header a participant writes at ``participant_time`` (its clock)."""
    return formatdate(participant_time, usegmt=True)


def test_a_date_header_bounds_the_offset_to_one_second_and_the_estimate_is_its_middle() -> None:
    clocks = Clocks(["payment"], metrics=Metrics())
    sent = 1_800_000_000.25
    received = sent + 0.002
    clocks.sample_date("payment", sent, received, date_at(sent + 300.001))  # 300 s ahead
    lo, hi = clocks["payment"].bounds
    assert lo <= 300.0 <= hi
    assert hi - lo == pytest.approx(1.002, abs=1e-6)
    assert clocks["payment"].estimate == (lo + hi) / 2
    assert clocks.corrections == {"payment": (lo + hi) / 2}
    assert clocks.stale_corrections == {"payment": hi}  # ahead: the upper bound, for staleness


def test_clocks_that_agree_are_not_corrected() -> None:
    clocks = Clocks(["order"], metrics=Metrics())
    for k in range(20):
        sent = 1_800_000_000 + k * 0.37
        clocks.sample_date("order", sent, sent + 0.001, date_at(sent))
        clocks.stamped("order", sent, sent + 0.0005)  # an event, half a millisecond on its way
    lo, hi = clocks["order"].bounds
    assert lo <= 0.0 <= hi < 0.1
    assert clocks["order"].estimate == 0.0
    assert clocks.corrections == {}
    # For staleness, the upper bound: an event never looks fresher than it is.
    assert clocks["order"].for_staleness == hi
    assert clocks.snapshot() == {"order": 0.0}


def test_a_participant_behind_is_corrected_by_its_upper_bound_and_events_tighten_the_lower() -> None:
    clocks = Clocks(["payment"], metrics=Metrics())
    theta = -300.4
    now = 1_800_000_000.6
    clocks.sample_date("payment", now, now + 0.001, date_at(now + theta))
    clocks.stamped("payment", now + theta - 0.003, now)  # an event stamped 3 ms before it arrived
    lo, hi = clocks["payment"].bounds
    assert lo == pytest.approx(theta - 0.003, abs=1e-6)
    assert lo <= theta <= hi < 0
    assert clocks["payment"].estimate == (lo + hi) / 2
    assert clocks["payment"].for_staleness == hi  # never less than the true offset


def test_events_alone_bound_from_below_and_unmeasured_is_null() -> None:
    clocks = Clocks(["payment", "shipping"], metrics=Metrics())
    clocks.stamped("payment", 1_800_000_300.0, 1_800_000_000.002)
    lo, hi = clocks["payment"].bounds
    assert lo == pytest.approx(299.998)
    assert hi == math.inf
    assert clocks["payment"].estimate == pytest.approx(299.998)
    assert clocks["payment"].for_staleness == pytest.approx(299.998)
    assert clocks.snapshot() == {"payment": pytest.approx(299_998.0), "shipping": None}


def test_a_clock_that_is_stepped_is_followed_and_forged_offsets_are_not_kept() -> None:
    offset = ClockOffset()
    offset.bound(299.5, 300.5)
    offset.bound(-0.5, 0.5)  # contradicts: the clock was set right
    assert offset.bounds == (-0.5, 0.5)
    assert offset.estimate == 0.0
    offset.bound(10 * 86_400.0, math.inf)  # a forged event time ten days ahead
    assert offset.bounds == (-0.5, 0.5)
    offset.bound(3600.0, math.inf)  # one an hour ahead: an event alone does not overturn answers
    assert offset.bounds == (-0.5, 0.5)
    offset.bound(3599.5, 3600.5)  # an answer does: that clock really jumped an hour
    assert offset.bounds == (3599.5, 3600.5)


def test_bounds_older_than_two_windows_are_forgotten() -> None:
    offset = ClockOffset(window_s=0.05)
    offset.bound(0.1, 0.2)
    time.sleep(0.06)
    offset.bound(0.0, 0.3)  # a new window; the previous one still narrows
    assert offset.bounds == (0.1, 0.2)
    time.sleep(0.06)
    offset.bound(-0.1, 0.4)
    assert offset.bounds == (0.0, 0.3)  # the first window is gone, the second narrows
    time.sleep(0.06)
    offset.bound(-0.2, 0.5)
    assert offset.bounds == (-0.1, 0.4)


@pytest.mark.parametrize("theta", [300.0, -300.0, 0.0, 0.4321, -7.9876])
def test_probes_timed_by_probe_at_halve_the_interval(theta: float) -> None:
    """Each probe is sent when the participant's second is expected to tick over: within a dozen
    probes (1 ms on the way each way) the interval is under 20 ms wide, and holds the truth."""
    clocks = Clocks(["p"], metrics=Metrics())
    now = 1_800_000_000.123
    rng = random.Random(7)
    for _ in range(12):
        sent = clocks.probe_at("p", now)
        assert sent >= now
        processed = sent + 0.001 * rng.random()
        received = processed + 0.001 * rng.random()
        clocks.sample_date("p", sent, received, date_at(processed + theta))
        now = received + 0.5
    lo, hi = clocks["p"].bounds
    assert lo <= theta <= hi
    assert hi - lo < 0.02


def test_an_offset_past_the_threshold_is_logged_once_and_its_return_once(caplog: Any) -> None:
    clocks = Clocks(["payment"], metrics=Metrics())
    caplog.set_level(logging.INFO, logger="aggregator.clocks")
    for k in range(5):
        clocks.stamped("payment", 1_800_000_300.0 + k, 1_800_000_000.001 + k)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "payment's clock is ahead of this aggregator's by 299.999 s" in warnings[0].getMessage()
    clocks.sample_date("payment", 1_800_000_100.0, 1_800_000_100.001, date_at(1_800_000_100.0))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert clocks.corrections == {}


# -- views: stalled and step by corrected times ------------------------------------------------


def _part(name: str, state: str, version: int, updated: float) -> Part:
    return Part(name, state, version, iso(updated), time.monotonic(), iso(time.time()), "live")


def test_a_participant_ahead_does_not_hide_a_stall_nor_take_the_step() -> None:
    """payment's clock is 5 min ahead: its AUTHORIZED, written 'in the future', really happened
    4 s ago, before order's last change 3 s ago; both are older than stall_after_ms."""
    definition = parse_definition(
        'name = "skew"\n[settings]\nstall_after_ms = 1000\n'
        '[participants.order]\nurl = "http://127.0.0.1:9"\n[participants.payment]\nurl = "http://127.0.0.1:9"\n'
        '[[rules]]\nstate = "IN_PROGRESS"\n'
    )
    now = time.time()
    parts = {
        "order": _part("order", "PENDING", 1, now - 3.0),
        "payment": _part("payment", "AUTHORIZED", 1, now - 4.0 + 300.0),
    }
    uncorrected = build_view(definition, "wf", parts, generated_at=iso(now))
    assert (uncorrected.stalled, uncorrected.step) == (False, "payment")  # what the skew did
    view = build_view(definition, "wf", parts, generated_at=iso(now), offsets={"payment": 300.0})
    assert (view.stalled, view.step) == (True, "order")
    body = view.to_json()
    assert body["parts"]["payment"]["clock_offset_ms"] == 300_000.0
    assert "clock_offset_ms" not in body["parts"]["order"]
    # A participant behind: its old-looking change is the newest, and the workflow is not stalled.
    parts["payment"] = _part("payment", "AUTHORIZED", 2, now - 0.2 - 300.0)
    behind = build_view(definition, "wf", parts, generated_at=iso(now), offsets={"payment": -300.0})
    assert (behind.stalled, behind.step) == (False, "payment")


# -- the timeline: causal order, then corrected time ---------------------------------------------


class _H:
    def __init__(self, state: str, version: int, at: float, event: str | None, cause: str | None) -> None:
        self.state, self.version, self.at, self.event, self.cause = state, version, iso(at), event, cause


def test_no_clock_puts_an_effect_before_its_cause() -> None:
    """payment's clock is 5 min behind and uncorrected: its AUTHORIZED still follows the order's
    PENDING that caused it, and shipping's entries follow theirs."""
    t = 1_800_000_000.0
    histories = {
        "order": [
            _H("PENDING", 1, t, "e-order-1", None),
            _H("COMPLETED", 2, t + 0.030, "e-order-2", "e-ship-1"),
        ],
        "payment": [_H("AUTHORIZED", 1, t + 0.010 - 300.0, "e-pay-1", "e-order-1")],
        "inventory": [_H("RESERVED", 1, t + 0.012, "e-inv-1", "e-order-1")],
        "shipping": [_H("SCHEDULED", 1, t + 0.020, "e-ship-1", "e-inv-1")],
    }
    entries = merge(histories, {})
    assert [(e["participant"], e["state"]) for e in entries] == [
        ("order", "PENDING"),
        ("payment", "AUTHORIZED"),
        ("inventory", "RESERVED"),
        ("shipping", "SCHEDULED"),
        ("order", "COMPLETED"),
    ]
    assert entries[1]["cause"] == entries[0]["event"] == "e-order-1"
    # Corrected, the same order, and the entries say by how much.
    corrected = merge(histories, {"payment": -300.0})
    assert [e["state"] for e in corrected] == [e["state"] for e in entries]
    assert corrected[1]["clock_offset_ms"] == -300_000.0
    assert corrected[1]["at"] == iso(t + 0.010 - 300.0)  # as the participant wrote it


def test_unrelated_entries_go_by_corrected_time() -> None:
    t = 1_800_000_000.0
    histories = {
        "a": [_H("X", 1, t + 0.5, None, None)],
        "b": [_H("Y", 1, t + 300.2, None, None)],  # 5 min ahead: really at t + 0.2
    }
    assert [e["state"] for e in merge(histories, {})] == ["X", "Y"]
    assert [e["state"] for e in merge(histories, {"b": 300.0})] == ["Y", "X"]


def test_a_forged_cycle_of_causes_is_cut_and_every_entry_is_kept() -> None:
    entries: list[TimelineEntryBody] = [
        {
            "participant": "a",
            "state": "A",
            "version": 1,
            "at": "",
            "source": "live",
            "event": "1",
            "cause": "2",
        },
        {
            "participant": "b",
            "state": "B",
            "version": 1,
            "at": "",
            "source": "live",
            "event": "2",
            "cause": "1",
        },
        {
            "participant": "c",
            "state": "C",
            "version": 1,
            "at": "",
            "source": "live",
            "event": "3",
            "cause": "3",
        },
    ]
    order = causal_order(entries, [2.0, 1.0, 0.5])
    assert sorted(order) == [0, 1, 2]
    assert order[0] == 2  # its cause is itself: no wait


def test_a_large_hostile_timeline_orders_in_bounded_time() -> None:
    """40,000 entries whose causes all point at one another in a ring: one pass, not a quadratic one."""
    n = 40_000
    entries: list[TimelineEntryBody] = [
        {
            "participant": f"p{i % 4}",
            "state": "S",
            "version": i // 4 + 1,
            "at": "",
            "source": "live",
            "event": str(i),
            "cause": str((i + 1) % n),
        }
        for i in range(n)
    ]
    start = time.process_time()
    order = causal_order(entries, [float(n - i) for i in range(n)])
    assert sorted(order) == list(range(n))
    assert time.process_time() - start < 5.0


def test_a_date_header_no_clock_reads_is_not_a_measurement() -> None:
    """A participant (or a foreign API) answering ``Date: … 10000`` or worse: nothing raises."""
    clocks = Clocks(["p"], metrics=Metrics())
    for date in ("Fri, 01 Jan 10000 00:00:00 GMT", "Fri, 01 Jan 99999999999 00:00:00 GMT", "yesterday"):
        clocks.sample_date("p", 1_800_000_000.0, 1_800_000_000.001, date)
    assert clocks.snapshot() == {"p": None}
