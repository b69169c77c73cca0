"""Watching a workflow: the view now, then a new view whenever one of its parts changes.

:class:`Watchers` is told of every stored part change (by the cache's owner) and hands it to
the bounded queue of each watcher of that workflow; :func:`watch_views` turns a watcher's
queue into views, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from participants.events import utc_now

from .errors import NoParticipantAnswered, TooManyWatchers, WorkflowNotFound
from .metrics import Metrics
from .view import Part, View, build_view

if TYPE_CHECKING:
    from .core import Aggregator, ReadOptions

#: Changes a slow watcher may fall behind by before the oldest are dropped.
_QUEUE = 256


class Watchers:
    """Who watches which workflow, bounded to ``limit`` at once."""

    def __init__(self, *, limit: int, metrics: Metrics) -> None:
        self._queues: defaultdict[str, set[asyncio.Queue[Part]]] = defaultdict(set)
        self._limit = limit
        self._metrics = metrics
        self.count = 0

    def notify(self, workflow_id: str, part: Part) -> None:
        """A part of ``workflow_id`` changed: queue it for each of its watchers."""
        for queue in self._queues.get(workflow_id, ()):
            if queue.full():
                queue.get_nowait()  # a watcher this far behind loses the oldest change
            queue.put_nowait(part)

    @contextlib.contextmanager
    def subscribe(self, workflow_id: str) -> Iterator[asyncio.Queue[Part]]:
        """A queue of the workflow's part changes while the block runs; :class:`TooManyWatchers` past the bound."""
        if self.count >= self._limit:
            raise TooManyWatchers(self._limit)
        queue: asyncio.Queue[Part] = asyncio.Queue(maxsize=_QUEUE)
        self._queues[workflow_id].add(queue)
        self.count += 1
        self._metrics.watchers.set(self.count)
        try:
            yield queue
        finally:
            self._queues[workflow_id].discard(queue)
            if not self._queues[workflow_id]:
                del self._queues[workflow_id]
            self.count -= 1
            self._metrics.watchers.set(self.count)


async def _snapshot(agg: Aggregator, workflow_id: str, options: ReadOptions) -> dict[str, Part] | None:
    try:
        view = await agg.view(workflow_id, options)
    except (WorkflowNotFound, NoParticipantAnswered):
        return None
    return dict(view.parts)


async def watch_views(agg: Aggregator, workflow_id: str, options: ReadOptions) -> AsyncIterator[View]:
    """See :meth:`Aggregator.watch`."""
    with agg.watchers.subscribe(workflow_id) as queue:
        last: str | None = None
        parts = await _snapshot(agg, workflow_id, options)
        if parts is not None:
            view = build_view(agg.definition, workflow_id, parts, generated_at=utc_now())
            last = view.etag
            yield view
        poll = agg.settings.watch_poll_ms / 1000
        while True:
            try:
                async with asyncio.timeout(poll):
                    changed = await queue.get()
            except TimeoutError:
                if agg.feed is not None and agg.feed.healthy:
                    continue
                polled = await _snapshot(agg, workflow_id, options)
                if polled is None or not queue.empty():
                    continue  # changes the poll found are queued: taken in order next
                parts = polled  # nothing new, but errors (a participant going down) show
            else:
                if parts is None:
                    # The first sign of the workflow: learn the other parts too.
                    parts = await _snapshot(agg, workflow_id, options)
                    if parts is None:
                        continue
                parts = {**parts, changed.participant: changed}
            view = build_view(agg.definition, workflow_id, parts, generated_at=utc_now())
            if view.etag != last:
                last = view.etag
                yield view
