"""The bound on concurrent listing scans (:mod:`aggregator._scans`) without a server."""

from __future__ import annotations

import asyncio

import pytest

from aggregator import _scans
from aggregator._scans import Slots
from aggregator.errors import TooManyScans


async def test_a_slot_is_freed_however_the_block_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block that raises, or is cancelled, gives its slot back; past the bound the wait ends in
    TooManyScans, naming the bound and when to try again (at least 1 s, at most the time budget)."""
    monkeypatch.setattr(_scans, "WAIT_S", 0.05)
    slots = Slots("summaries", 1, lambda: 10.0)
    with pytest.raises(RuntimeError):
        async with slots.hold():
            raise RuntimeError("the initiator failed")
    assert slots.running == 0
    entered = asyncio.Event()

    async def held() -> None:
        async with slots.hold():
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(held())
    await entered.wait()
    assert slots.running == 1
    with pytest.raises(TooManyScans, match="1 summaries are running") as refused:
        async with slots.hold():
            pass
    assert refused.value.retry_after_s == 10
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slots.running == 0
    async with slots.hold():
        assert slots.running == 1


async def test_a_waiting_request_takes_the_slot_a_running_one_frees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scans, "WAIT_S", 5.0)
    slots = Slots("fleet pages", 1, lambda: 5.0)
    order: list[str] = []

    async def scan(name: str, seconds: float) -> None:
        async with slots.hold():
            order.append(name)
            await asyncio.sleep(seconds)

    await asyncio.gather(scan("first", 0.05), scan("second", 0))
    assert order == ["first", "second"]
    assert slots.retry_after_s() == 1  # none running
