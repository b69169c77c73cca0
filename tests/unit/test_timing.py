"""Durations are measured with a high-resolution clock: loopback calls of a fraction of a millisecond count."""

from __future__ import annotations

import asyncio

import pytest

from .fakes import FakeTransport, Reply, upstream_rig

uvloop = pytest.importorskip("uvloop")  # where uvloop has wheels: the event loop the servers run


async def _calls(n: int, busy: float) -> tuple[float, float, int, list[float]]:
    fake = FakeTransport(records={"payment": {"w": ("AUTHORIZED", 1)}}, choose=lambda calls: Reply(busy=busy))
    async with upstream_rig(fake) as rig:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            await rig.upstream.get("w", until=loop.time() + 1)
        histogram = rig.metrics.latency.labels("payment")
        total = histogram._sum.get()  # type: ignore[attr-defined]
        under_1ms = rig.metrics.value(
            "aggregator_participant_latency_seconds_bucket", participant="payment", le="0.001"
        )
        under_50us = rig.metrics.value(
            "aggregator_participant_latency_seconds_bucket", participant="payment", le="5e-05"
        )
        samples = list(rig.upstream._guard.window._samples)  # type: ignore[attr-defined]
        return total, under_1ms, int(under_50us), samples


def test_sub_millisecond_calls_are_timed_on_uvloop() -> None:
    """On uvloop, whose loop clock stands still within a turn (and counts whole milliseconds), a
    0.3 ms call still measures at least 0.3 ms, never 0, and not a whole number of milliseconds."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        total, _, under_50us, samples = runner.run(_calls(30, busy=0.0003))
    assert total >= 30 * 0.0003
    assert under_50us == 0  # no call recorded as instant in the histogram
    assert len(samples) == 30 and min(samples) >= 0.0003  # nor in the window the hedge delay comes from
    assert any(round(s * 1000, 6) % 1 for s in samples)  # sub-millisecond resolution
