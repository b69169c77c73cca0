"""Background: one guarded TaskGroup; failures are logged and contained, close cancels and waits."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from aggregator._background import Background
from aggregator.errors import NotOpen


async def boom() -> int:
    raise RuntimeError("boom")


async def value(result: int) -> int:
    await asyncio.sleep(0)
    return result


async def test_spawn_before_open_is_refused_and_closes_the_coroutine() -> None:
    background = Background()
    coro = value(1)
    with pytest.raises(NotOpen) as caught:
        background.spawn(coro, name="early")
    assert caught.value.state == "new"
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" warning
    assert background.running == 0


async def test_task_result_is_the_coroutines() -> None:
    background = Background()
    await background.open()
    task = background.spawn(value(42), name="answer")
    assert task.get_name() == "answer"
    assert await task == 42
    await asyncio.sleep(0)
    assert background.running == 0
    await background.close()


async def test_a_task_cancelled_before_its_first_step_closes_its_coroutine_and_is_let_go() -> None:
    background = Background()
    await background.open()
    coro = value(1)
    task = background.spawn(coro, name="cancelled-early")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the task's done callbacks
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" warning
    assert background.running == 0
    await background.close()


async def test_a_failing_task_is_logged_and_spares_its_siblings(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()
    await background.open()
    sibling_can_finish = asyncio.Event()

    async def sibling() -> str:
        await sibling_can_finish.wait()
        return "done"

    with caplog.at_level(logging.ERROR, logger="aggregator._background"):
        survivor = background.spawn(sibling(), name="sibling")
        failed = background.spawn(boom(), name="fails")
        assert await failed is None
        assert not survivor.done()
        sibling_can_finish.set()
        assert await survivor == "done"
    records = [r for r in caplog.records if r.name == "aggregator._background"]
    assert len(records) == 1
    assert records[0].getMessage() == "background task fails failed"
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)
    # The group is still usable after a failure.
    assert await background.spawn(value(7), name="after") == 7
    await background.close()


async def test_close_cancels_running_tasks_and_waits_for_them() -> None:
    background = Background()
    await background.open()
    started = 0
    cleaned_up: list[int] = []

    async def forever(i: int) -> None:
        nonlocal started
        started += 1
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned_up.append(i)

    tasks = [background.spawn(forever(i), name=f"t{i}") for i in range(3)]
    await asyncio.sleep(0)
    assert (started, background.running) == (3, 3)
    await asyncio.wait_for(background.close(), timeout=5)
    assert sorted(cleaned_up) == [0, 1, 2]
    assert all(t.cancelled() for t in tasks)
    assert background.running == 0


async def test_close_outlasts_a_task_that_swallows_one_cancellation() -> None:
    background = Background()
    await background.open()
    cancellations = 0

    async def stubborn() -> None:
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations >= 2:
                    raise

    task = background.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(background.close(), timeout=5)
    assert task.done()
    assert cancellations == 2


async def test_spawn_after_close_is_refused() -> None:
    background = Background()
    await background.open()
    await background.close()
    coro = value(1)
    with pytest.raises(NotOpen) as caught:
        background.spawn(coro, name="late")
    assert caught.value.state == "closed"
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_close_is_idempotent_and_works_without_open() -> None:
    never_opened = Background()
    await never_opened.close()
    assert never_opened.running == 0
    background = Background()
    await background.open()
    await background.close()
    await background.close()
    assert background.running == 0
