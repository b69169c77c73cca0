"""One loop timer for many calls (:mod:`aggregator._timers`): the guard's timeouts
(:class:`Deadlines`) and the hedger's (:class:`HedgeTimers`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aggregator._guard import Deadlines
from aggregator._hedge import HedgeTimers

from .fakes import FakeTransport, Reply, Rig, upstream_rig


def fake() -> FakeTransport:
    return FakeTransport(records={"payment": {f"w-{i}": ("AUTHORIZED", 1) for i in range(100)}})


async def read(rig: Rig, workflow_id: str) -> Any:
    return await rig.upstream.get(workflow_id, until=asyncio.get_running_loop().time() + 2.0)


async def warm_up(rig: Rig) -> None:
    """Thirty fast calls: they fill the latency window and earn hedge budget."""
    for i in range(30):
        await read(rig, f"w-{i}")


async def bounded(deadlines: Deadlines, seconds: float) -> str:
    """Sleep ``seconds`` within ``deadlines``, as Guard.call bounds a call: ``done`` or ``timeout``."""
    expiry = deadlines.enter()
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if deadlines.leave(expiry):
            return "timeout"
        raise
    finally:
        deadlines.leave(expiry)
    return "done"


async def test_a_call_keeps_its_own_deadline_after_an_earlier_call_ended() -> None:
    """The timer armed for a call that ended fires for nothing and re-arms for the next: a call
    started 30 ms later times out 50 ms after its own start, not at the first call's deadline."""
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    assert await bounded(deadlines, 0) == "done"
    assert len(deadlines) == 0  # an ended call's place is dropped at once
    await asyncio.sleep(0.03)
    started = loop.time()
    assert await bounded(deadlines, 1.0) == "timeout"
    assert 0.045 <= loop.time() - started < 0.5
    assert len(deadlines) == 0


async def test_calls_time_out_in_turn_each_at_its_deadline() -> None:
    """Three calls 20 ms apart, a 40 ms timeout: each times out 40 ms after it started."""
    deadlines = Deadlines(0.04)
    loop = asyncio.get_running_loop()

    async def timed() -> float:
        started = loop.time()
        assert await bounded(deadlines, 1.0) == "timeout"
        return loop.time() - started

    tasks = []
    for _ in range(3):
        tasks.append(asyncio.create_task(timed()))
        await asyncio.sleep(0.02)
    for took in await asyncio.gather(*tasks):
        assert 0.035 <= took < 0.3


async def test_a_cancellation_from_outside_is_not_a_timeout() -> None:
    """A call cancelled by someone else (a winning hedge, the aggregator closing) stays cancelled,
    and its place is dropped."""
    deadlines = Deadlines(0.01)
    task = asyncio.create_task(bounded(deadlines, 1.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_a_hedge_due_sooner_than_the_armed_one_fires_first() -> None:
    """A hedge added with a shorter delay than one already waiting (the percentile moved) re-arms
    the timer: each fires at its own time, in the order they fall due; a discarded one never."""
    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    timers = HedgeTimers(lambda w, flight, primary: fired.append((w, loop.time() - started)))
    flight: Any = loop.create_future()
    primary: Any = asyncio.current_task()
    timers.add(0.08, "late", flight, primary)
    timers.add(0.02, "soon", flight, primary)
    gone = timers.add(0.01, "landed", flight, primary)
    timers.discard(gone)
    await asyncio.sleep(0.15)
    assert [w for w, _ in fired] == ["soon", "late"]
    assert 0.015 <= fired[0][1] < 0.07
    assert fired[1][1] >= 0.075
    assert len(timers) == 0


async def test_an_entry_whose_callback_raises_leaves_the_later_ones_armed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hedge callback that raises (the loop logs it) does not disarm the hedges after it."""
    fired: list[str] = []

    def due(workflow_id: str, flight: Any, primary: Any) -> None:
        if workflow_id == "boom":
            raise RuntimeError("boom")
        fired.append(workflow_id)

    loop = asyncio.get_running_loop()
    timers = HedgeTimers(due)
    flight: Any = loop.create_future()
    primary: Any = asyncio.current_task()
    timers.add(0.01, "boom", flight, primary)
    timers.add(0.05, "after", flight, primary)
    await asyncio.sleep(0.12)
    assert fired == ["after"]
    assert len(timers) == 0
    assert any("boom" in repr(r.exc_info) for r in caplog.records if r.exc_info)


def test_deadlines_and_hedges_on_uvloop() -> None:
    """The same on uvloop, the servers' loop (whose clock has 1 ms resolution)."""
    uvloop = pytest.importorskip("uvloop")

    async def both() -> None:
        await test_a_call_keeps_its_own_deadline_after_an_earlier_call_ended()
        await test_calls_time_out_in_turn_each_at_its_deadline()
        await test_a_hedge_due_sooner_than_the_armed_one_fires_first()

    uvloop.run(both())


async def test_a_hedged_call_drops_its_timers_once_it_lands() -> None:
    """Through an upstream: fast calls leave no place kept in either queue; a slow one is still
    hedged (the hedge wins) and then leaves none either."""
    async with upstream_rig(fake()) as rig:
        await warm_up(rig)
        upstream: Any = rig.upstream
        assert len(upstream._guard._deadlines) == 0
        assert len(upstream._hedger._timers) == 0
        rig.fake.plan("payment", Reply(delay=1.0))
        part = await read(rig, "w-77")
        assert part.state == "AUTHORIZED"
        await asyncio.sleep(0)
        assert rig.count("aggregator_hedge_wins_total") == 1
        assert len(upstream._guard._deadlines) == 0
        assert len(upstream._hedger._timers) == 0


async def test_an_ended_call_kept_behind_a_waiting_one_holds_no_task() -> None:
    """A call that ended while an earlier one still waits keeps its place (the queue drops from
    the front) but lets go of its task, so a hanging call keeps no finished tasks alive."""
    deadlines = Deadlines(5.0)
    waiting = asyncio.Event()
    places: list[Any] = []

    async def call(hold: bool) -> None:
        places.append(deadlines.enter())
        if hold:
            await waiting.wait()
        deadlines.leave(places[-1] if not hold else places[0])

    first = asyncio.create_task(call(True))
    await asyncio.sleep(0)
    await asyncio.create_task(call(False))
    assert len(deadlines) == 2 and places[1].task is None and places[0].task is first
    waiting.set()
    await first
    assert len(deadlines) == 0
