"""The wait of a view on its flights (aggregator._reads._landed): done when all land or at the
deadline, and nothing left behind on shared flights when its reader gives up."""

from __future__ import annotations

import asyncio
from typing import Any

from aggregator._reads import _landed


class _Counted(asyncio.Future[Any]):
    """A flight that counts the done-callbacks registered on it."""

    def __init__(self) -> None:
        super().__init__()
        self.registered = 0

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        self.registered += 1
        super().add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Any) -> int:
        removed = super().remove_done_callback(fn)
        self.registered -= removed
        return removed


async def test_done_when_every_flight_lands() -> None:
    flights = [_Counted(), _Counted()]
    loop = asyncio.get_running_loop()
    waiter = _landed(list(flights), loop.time() + 5)
    flights[0].set_result(None)
    await asyncio.sleep(0)
    assert not waiter.done()
    flights[1].set_result(None)
    await asyncio.wait_for(waiter, 1)


async def test_done_at_the_deadline_with_flights_still_out_and_their_callbacks_removed() -> None:
    flights = [_Counted(), _Counted()]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _landed(list(flights), started + 0.05)
    assert loop.time() - started >= 0.04
    assert not any(f.done() for f in flights)  # a reader never cancels a shared flight
    assert [f.registered for f in flights] == [0, 0]


async def test_a_reader_that_gives_up_leaves_no_callback_on_the_shared_flights() -> None:
    flights = [_Counted(), _Counted()]
    loop = asyncio.get_running_loop()
    reader = asyncio.ensure_future(_landed(list(flights), loop.time() + 60))
    await asyncio.sleep(0)
    assert [f.registered for f in flights] == [1, 1]
    reader.cancel()
    await asyncio.sleep(0)
    assert [f.registered for f in flights] == [0, 0]
    assert not any(f.done() for f in flights)
