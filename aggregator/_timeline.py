"""A workflow's timeline: every participant's history merged, no entry before its cause.

Each participant's own history is asked for (``GET /status/{id}``, live: a cached part or an
event carries only the latest state), all at once, each call bounded by the participant's
timeout and all by the read deadline. A participant that cannot be reached leaves its entries
out and is named in ``errors``; one that has no record adds nothing.

Clocks disagree, so time alone cannot order entries of different participants. The order is
causal first: an entry comes after the one before it in its participant's history and after the
entry whose ``event`` is its ``cause`` (participants record both, DESIGN §4). Among entries
that causality leaves unordered, the earlier by *corrected* time comes first: each ``at``, as
its participant wrote it, less that participant's measured clock offset
(:mod:`aggregator._clocks`). A history whose causes form a cycle (only a forged one can) is
cut at its earliest entry.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Mapping, Sequence

from contract import epoch_s

from ._client import Transition
from ._fanout import Upstream
from .errors import NoParticipantAnswered, PartFailure, WorkflowNotFound
from .schema import FailureKind, TimelineBody, TimelineEntryBody


async def timeline(
    workflow_id: str,
    upstreams: Mapping[str, Upstream],
    *,
    deadline_s: float,
    offsets: Mapping[str, float] | None = None,
) -> TimelineBody:
    """The merged timeline of ``workflow_id``; :class:`WorkflowNotFound` if no participant knows it.

    ``offsets`` (participant → seconds its clock is ahead of ours) correct the entries' times.
    """
    names = list(upstreams)

    # The same breaker, timeout and counting as every other call to the participant.
    tasks = [asyncio.ensure_future(upstreams[name].history(workflow_id)) for name in names]
    try:
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
    finally:  # past the deadline, or the request itself cancelled: no call outlives it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    histories: dict[str, Sequence[Transition]] = {}
    errors: dict[str, FailureKind] = {}
    for name, task in zip(names, tasks, strict=True):
        if task in pending:
            errors[name] = "timeout"
            continue
        exc = task.exception()
        if isinstance(exc, PartFailure):
            errors[name] = exc.kind
            continue
        if exc is not None:
            raise exc
        history = task.result()
        if history is not None:
            histories[name] = history
    if not histories and len(errors) == len(names):
        raise NoParticipantAnswered(workflow_id, dict(errors))
    if not histories and not errors:
        raise WorkflowNotFound(workflow_id)
    return {"workflow_id": workflow_id, "entries": merge(histories, offsets or {}), "errors": errors}


def merge(
    histories: Mapping[str, Sequence[Transition]], offsets: Mapping[str, float]
) -> list[TimelineEntryBody]:
    """The participants' histories as one list: causal order, then corrected time (module docstring)."""
    entries: list[TimelineEntryBody] = []
    times: list[float] = []
    for name, history in histories.items():
        offset = offsets.get(name, 0.0)
        for h in history:
            entry: TimelineEntryBody = {
                "participant": name,
                "state": h.state,
                "version": h.version,
                "at": h.at,
                "source": "live",
            }
            if h.event is not None:
                entry["event"] = h.event
            if h.cause is not None:
                entry["cause"] = h.cause
            if offset:
                entry["clock_offset_ms"] = round(offset * 1000, 3)
            entries.append(entry)
            at = epoch_s(h.at)
            times.append(math.inf if at is None else at - offset)
    return [entries[i] for i in causal_order(entries, times)]


def causal_order(entries: Sequence[TimelineEntryBody], times: Sequence[float]) -> list[int]:
    """Indexes of ``entries`` with every entry after its participant's previous one and after its
    cause; otherwise by ``times`` (then participant, then version). O(n log n)."""
    n = len(entries)

    def key(i: int) -> tuple[float, str, int]:
        return (times[i], entries[i]["participant"], entries[i]["version"] or 0)

    after: list[list[int]] = [[] for _ in range(n)]
    waits = [0] * n
    by_participant: dict[str, list[int]] = {}
    by_event: dict[str, int] = {}
    for i, entry in enumerate(entries):
        by_participant.setdefault(entry["participant"], []).append(i)
        event = entry.get("event")
        if event is not None:
            by_event.setdefault(event, i)
    for indexes in by_participant.values():
        indexes.sort(key=lambda i: (entries[i]["version"] or 0, times[i]))
        for before, then in itertools.pairwise(indexes):
            after[before].append(then)
            waits[then] += 1
    for i, entry in enumerate(entries):
        cause = entry.get("cause")
        j = by_event.get(cause) if cause is not None else None
        if j is not None and j != i:
            after[j].append(i)
            waits[i] += 1
    ready = [(key(i), i) for i in range(n) if waits[i] == 0]
    heapq.heapify(ready)
    by_key = sorted(range(n), key=key)  # where to cut a cycle: the earliest entry left
    cut = 0
    placed = [False] * n
    order: list[int] = []
    while len(order) < n:
        if not ready:
            while placed[by_key[cut]]:
                cut += 1
            ready.append((key(by_key[cut]), by_key[cut]))
        _, i = heapq.heappop(ready)
        if placed[i]:
            continue
        placed[i] = True
        order.append(i)
        for j in after[i]:
            waits[j] -= 1
            if waits[j] == 0 and not placed[j]:
                heapq.heappush(ready, (key(j), j))
    return order
