"""The part store: the newest known part per (participant, workflow), at the centre of the aggregator.

Everything that learns a part (a live fetch, a background revalidation, a batch answer, an
event) *offers* it here; the store keeps the one with the highest version (on a tie, the newer
observation), says whether the offer was taken and whether it changed anything, and tells the
workflow's listeners of every change. Everything that reads (views, batches, watch streams,
``min_version`` waits) reads or listens here.

It is an LRU bounded by entry count, so memory is bounded; the price is that monotonic reads
are guaranteed only for workflows still in it. In ``on-demand`` mode nothing is served from it,
but it still remembers what was served, so that a late, older answer can never take a part
backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from .view import Part

#: The most states an answer without a history of its own accumulates (the newest are kept).
_MAX_HISTORY = 64

Listener = Callable[[Part], None]
"""Called with each part of a workflow that changed (a new version or state)."""
AnyListener = Callable[[str, Part], None]
"""Called with the workflow id and the part of every change, whatever the workflow."""


@dataclass(frozen=True, slots=True)
class Offered:
    """What an offer did."""

    part: Part
    """The part to serve: the offered one if taken, else the newer one kept."""
    taken: bool
    """The offered part is now the kept one."""
    changed: bool
    """It differs in version or state from what was kept before (listeners were told)."""
    contradicted: Part | None = None
    """An event's part the offered live answer proved wrong, and replaced (see :meth:`PartStore.offer`)."""


def _disproves(answer: Part, kept: Part) -> bool:
    """Whether a live ``answer`` shows that the event-sourced ``kept`` part never happened."""
    return (
        answer.source == "live"
        and kept.source == "event"
        and kept.received is not None
        and answer.observed > kept.received
        and answer.version < kept.version
    )


class PartStore:
    """Bounded, monotonic store of the newest part per (participant, workflow), with change listeners."""

    def __init__(self, size: int) -> None:
        # An OrderedDict in least-recently-used order: its lookups and moves are C calls, and a
        # view does four of them (cachetools' LRUCache costs 1 µs each in Python).
        self._parts: OrderedDict[tuple[str, str], Part] = OrderedDict()
        self._size = size
        self._listeners: dict[str, set[Listener]] = {}
        self._everything: list[AnyListener] = []

    def get(self, participant: str, workflow_id: str) -> Part | None:
        """The newest known part, if any (now the most recently used)."""
        key = (participant, workflow_id)
        part = self._parts.get(key)
        if part is not None:
            self._parts.move_to_end(key)
        return part

    def offer(self, workflow_id: str, part: Part) -> Offered:
        """Merge ``part`` in; never replaces a newer part with an older one, but for one case.

        The participant is the authority on its part: a live answer to a request sent *after*
        an event arrived here reflects everything the participant had committed, and so every
        event it had published. If that answer is at a lower version than the event's part
        kept, the participant never made that version: the event was forged or misrouted, and
        the answer replaces it (``contradicted`` says so).
        """
        key = (part.participant, workflow_id)
        kept = self._parts.get(key)
        contradicted = None
        if kept is not None and (
            kept.version > part.version or (kept.version == part.version and kept.observed > part.observed)
        ):
            if not _disproves(part, kept):
                return Offered(kept, taken=False, changed=False)
            contradicted = kept
        if kept is not None and not part.history and kept.history:
            # An answer without a history (a mapped participant's, or an event's): what was known
            # of the past stays known, and a new state joins it.
            if part.version == kept.version or part.state is None or part.state == kept.history[-1]:
                part = replace(part, history=kept.history)
            else:
                part = replace(part, history=(*kept.history[-(_MAX_HISTORY - 1) :], part.state))
        self._put(key, part)
        changed = kept is None or kept.version != part.version or kept.state != part.state
        if changed and workflow_id in self._listeners:
            for listener in tuple(self._listeners[workflow_id]):
                listener(part)
        if changed and self._everything:
            for any_listener in tuple(self._everything):
                any_listener(workflow_id, part)
        return Offered(part, taken=True, changed=changed, contradicted=contradicted)

    def take(self, workflow_id: str, part: Part) -> bool:
        """Keep ``part`` if it needs none of :meth:`offer`'s care, the common case of an answer:
        nothing is kept for it yet, or what is kept is older (at an equal version, an earlier
        observation whose history ``part`` carries too), and no listener waits on the workflow
        (nor on every workflow).

        False: nothing was done, and ``part`` should be offered.
        """
        if workflow_id in self._listeners or self._everything:
            return False
        key = (part.participant, workflow_id)
        kept = self._parts.get(key)
        if kept is not None and (
            kept.version > part.version
            or (kept.version == part.version and (kept.observed > part.observed or not part.history))
        ):
            return False
        self._put(key, part)
        return True

    def relabel(self, workflow_id: str, kept: Part, relabelled: Part) -> None:
        """Keep ``relabelled`` (the same knowledge as ``kept``, served as ``cache``) in its place,
        if ``kept`` is still the part kept; listeners are not told: nothing changed."""
        key = (kept.participant, workflow_id)
        if self._parts.get(key) is kept:
            self._put(key, relabelled)

    def _put(self, key: tuple[str, str], part: Part) -> None:
        parts = self._parts
        parts[key] = part
        parts.move_to_end(key)
        if len(parts) > self._size:
            parts.popitem(last=False)  # the least recently used

    @contextlib.contextmanager
    def listening(self, workflow_id: str, listener: Listener) -> Iterator[None]:
        """Call ``listener`` with every change of the workflow's parts while the block runs."""
        self._listeners.setdefault(workflow_id, set()).add(listener)
        try:
            yield
        finally:
            listeners = self._listeners.get(workflow_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[workflow_id]

    @contextlib.contextmanager
    def listening_to_all(self, listener: AnyListener) -> Iterator[None]:
        """Call ``listener`` with every change of any workflow's parts while the block runs."""
        self._everything.append(listener)
        try:
            yield
        finally:
            self._everything.remove(listener)

    async def reach(self, participant: str, workflow_id: str, version: int, *, timeout: float) -> Part | None:
        """The part once it has reached ``version`` (at once if it has), or None after ``timeout`` seconds."""
        kept = self.get(participant, workflow_id)
        if kept is not None and kept.version >= version:
            return kept
        reached = asyncio.Event()

        def check(part: Part) -> None:
            if part.participant == participant and part.version >= version:
                reached.set()

        with self.listening(workflow_id, check), contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await reached.wait()
        kept = self.get(participant, workflow_id)
        return kept if kept is not None and kept.version >= version else None

    @property
    def listened(self) -> int:
        """How many workflows have listeners (for tests and metrics)."""
        return len(self._listeners)

    def __len__(self) -> int:
        return len(self._parts)
