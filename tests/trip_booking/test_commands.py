"""``python -m trip_booking serve NAME``: each service as a process, and its argument errors."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from order_saga.broker import MosquittoBroker

from ..support import needs_mosquitto, run_python
from ._stack import OUTCOMES, as_processes


@pytest.mark.slow
async def test_serve_runs_each_service_as_a_process(own_broker: MosquittoBroker, tmp_path: Path) -> None:
    """The four services as processes carry trips to their outcomes, and stop at SIGTERM with status 0."""
    async with as_processes(own_broker.url, tmp_path) as (trip, procs):
        for outcome in OUTCOMES:
            await trip.book(f"p-{outcome}", outcome)
        for outcome, (_, expected) in OUTCOMES.items():
            await trip.wait_states(f"p-{outcome}", expected)
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(10) for proc in procs.values()] == [0, 0, 0, 0]
    for name in procs:
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text()


async def _run(*args: str) -> tuple[int, str, str]:
    return await run_python("-m", "trip_booking", *args, timeout=20, merged=False)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "command"),
        (("serve",), "NAME"),
        (("serve", "taxis"), "invalid choice"),
        (("serve", "trips", "--port", "x"), "invalid port"),
        (("serve", "trips", "--port", "70000"), "invalid port"),
        (("serve", "trips", "--broker", "http://localhost"), "scheme"),
        (("serve", "trips", "--surprise"), "unrecognized arguments"),
        (("serve", "trips", "--db", "/nonexistent-dir/x/trips.sqlite3"), "cannot use the database"),
        (("demo", "--freshness", "sometimes"), "invalid choice"),
    ],
)
@pytest.mark.slow
async def test_argument_errors_are_one_line_and_status_2(args: tuple[str, ...], needle: str) -> None:
    """A wrong argument is one line on stderr naming the problem, exit status 2, no traceback."""
    status, out, err = await _run(*args)
    assert (status, out) == (2, "")
    assert (
        len(err.strip().splitlines()) == 1 and needle in err and err.startswith("python -m trip_booking")
    ), err


@needs_mosquitto
@pytest.mark.slow
async def test_demo_once_books_every_outcome_through_the_aggregator() -> None:
    """``demo --once`` shows each trip's view in its expected state through the aggregator and exits 0."""
    status, out, err = await _run("demo", "--once")
    assert status == 0, out + err
    for trip_id, state in [
        ("trip-ok", "BOOKED"),
        ("trip-no-flight", "CANCELLED"),
        ("trip-no-room", "CANCELLED"),
        ("trip-declined", "CANCELLED"),
    ]:
        assert f"ok   {trip_id}: expected {state}" in out
    assert "FAIL" not in out and "Traceback" not in err
