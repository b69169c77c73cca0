"""One owner for every background task of an aggregator: one ``TaskGroup``, cancelled on close.

Fetches in flight, background revalidations and the event feed are all spawned here. A task
that fails with an unexpected exception is logged and ends; it never takes its siblings (or
the process) down with it, which a bare ``TaskGroup`` would do. Closing cancels every task
still running, then leaves the group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

from contract import cancel_and_wait

from .errors import NotOpen

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Background:
    """Spawns tasks into one ``TaskGroup`` between :meth:`open` and :meth:`close`."""

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def open(self) -> None:
        """Start accepting tasks."""
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group

    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T | None]:
        """Run ``coro`` in the background; the task's result is ``coro``'s, or None if it failed."""
        if self._group is None:
            coro.close()
            raise NotOpen("closed" if self._closed else "new")
        task = self._group.create_task(_guarded(coro, name), name=name)
        self._tasks.add(task)
        # One callback, not two: each is a handle of the loop's, made and run when the task ends
        # (one task per single call to a participant).
        task.add_done_callback(partial(self._ended, coro))
        return task

    def _ended(self, coro: Coroutine[Any, Any, Any], task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # A task cancelled before its first step never awaits ``coro``: close it (no-op otherwise).
        coro.close()

    @property
    def running(self) -> int:
        """How many tasks are running."""
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait until all have ended."""
        group, self._group = self._group, None
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_and_wait(task)
        if group is not None:
            await group.__aexit__(None, None, None)


async def _guarded(coro: Coroutine[Any, Any, _T], name: str) -> _T | None:
    try:
        return await coro
    except Exception:
        log.exception("background task %s failed", name)
        return None
