"""Watching a workflow: the view now, then a new view whenever one of its parts changes.

:class:`Watchers` bounds how many watch at once and gives each watcher a bounded queue that
the part store fills with the workflow's changes; :func:`watch_views` turns a watcher's queue
into views, in order. Where changes are not pushed (no event feed up), the workflow is also
re-read every ``watch_poll_ms``, which is how a participant's own changes are seen at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator

from ._store import PartStore
from .errors import NoParticipantAnswered, TooManyWatchers, WorkflowNotFound
from .metrics import Metrics
from .view import Part, View

#: Changes a slow watcher may fall behind by before the oldest are dropped.
_QUEUE = 256
#: Longest pause between two polls of a workflow no participant knows yet: such polls back off
#: (doubling from ``watch_poll_ms``), so idle watchers of unknown ids cost little; any change
#: the store learns of still wakes them at once.
UNKNOWN_POLL_MAX_S = 10.0

Read = Callable[[], Awaitable[View]]
"""Reads the watched workflow's view now (with the watch's read options)."""
Rebuild = Callable[[dict[str, Part]], View]
"""Builds the watched workflow's view from parts."""


class Watchers:
    """Who watches which workflow, bounded to ``limit`` at once."""

    def __init__(self, *, limit: int, store: PartStore, metrics: Metrics) -> None:
        self.limit = limit
        self._store = store
        self._metrics = metrics
        self.count = 0

    @property
    def full(self) -> bool:
        """Whether a new watcher would be refused."""
        return self.count >= self.limit

    @contextlib.contextmanager
    def subscribe(self, workflow_id: str) -> Iterator[asyncio.Queue[Part]]:
        """A queue of the workflow's part changes while the block runs; :class:`TooManyWatchers` past the bound."""
        if self.full:
            raise TooManyWatchers(self.limit)
        queue: asyncio.Queue[Part] = asyncio.Queue(maxsize=_QUEUE)

        def changed(part: Part) -> None:
            if queue.full():
                queue.get_nowait()  # a watcher this far behind loses the oldest change
            queue.put_nowait(part)

        self.count += 1
        self._metrics.watchers.set(self.count)
        try:
            with self._store.listening(workflow_id, changed):
                yield queue
        finally:
            self.count -= 1
            self._metrics.watchers.set(self.count)


async def _snapshot(read: Read) -> dict[str, Part] | None:
    try:
        view = await read()
    except (WorkflowNotFound, NoParticipantAnswered):
        return None
    return dict(view.parts)


async def watch_views(
    queue: asyncio.Queue[Part],
    *,
    read: Read,
    rebuild: Rebuild,
    pushed: Callable[[], bool],
    poll_s: float,
) -> AsyncGenerator[View, None]:
    """Views of one workflow: now (once it exists), then one per change, in order; see :meth:`Aggregator.watch`."""
    last: str | None = None
    parts = await _snapshot(read)
    if parts is not None:
        view = rebuild(parts)
        last = view.etag
        yield view
    unknown_poll_s = poll_s
    while True:
        try:
            async with asyncio.timeout(poll_s if parts is not None else unknown_poll_s):
                changed = await queue.get()
        except TimeoutError:
            if pushed():
                continue
            polled = await _snapshot(read)
            if polled is None:
                unknown_poll_s = min(unknown_poll_s * 2, max(poll_s, UNKNOWN_POLL_MAX_S))
                continue
            if not queue.empty():
                continue  # changes the poll found are queued: taken in order next
            parts = polled  # nothing new, but errors (a participant going down) show
        else:
            if parts is None:
                if changed.state is None:
                    continue  # a participant that has no record of it either: nothing to show
                # The first sign of the workflow: learn the other parts too.
                parts = await _snapshot(read)
                if parts is None:
                    continue
            parts = {**parts, changed.participant: changed}
        view = rebuild(parts)
        if view.etag != last:
            last = view.etag
            yield view
