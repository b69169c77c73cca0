"""The latest known part per (participant, workflow), merged monotonically.

Every observation (a fetch, a batch answer, an event) is *offered*; the cache keeps the one with
the highest version, and on a tie the newer observation. It is an LRU bounded by entry count,
so memory is bounded; the price is that monotonic reads are guaranteed only for workflows still
in it. In ``on-demand`` mode the cache is never served from, but still remembers what was served
so that a late, older answer can never take a part backwards.
"""

from __future__ import annotations

from dataclasses import replace

from cachetools import LRUCache

from .view import Part


class PartCache:
    """Bounded, monotonic store of the newest part per (participant, workflow)."""

    def __init__(self, size: int) -> None:
        self._parts: LRUCache[tuple[str, str], Part] = LRUCache(maxsize=size)

    def get(self, participant: str, workflow_id: str) -> Part | None:
        """The newest known part, if any."""
        return self._parts.get((participant, workflow_id))

    def offer(self, workflow_id: str, part: Part) -> Part:
        """Merge ``part`` in; return the part to serve (never older than one already kept)."""
        key = (part.participant, workflow_id)
        kept = self._parts.get(key)
        if kept is not None and (
            kept.version > part.version or (kept.version == part.version and kept.observed > part.observed)
        ):
            return kept
        if kept is not None and part.version == kept.version and not part.history and kept.history:
            part = replace(part, history=kept.history)
        self._parts[key] = part
        return part

    def __len__(self) -> int:
        return len(self._parts)
