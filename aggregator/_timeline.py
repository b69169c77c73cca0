"""A workflow's timeline: every participant's history merged and ordered by time.

Each participant's own history is asked for (``GET /status/{id}``, live: a cached part or an
event carries only the latest state), all at once, each call bounded by the participant's
timeout and all by the read deadline. A participant that cannot be reached leaves its entries
out and is named in ``errors``; one that has no record adds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ._fanout import Upstream
from .errors import NoParticipantAnswered, PartFailure, WorkflowNotFound
from .schema import FailureKind, TimelineBody, TimelineEntryBody


async def timeline(workflow_id: str, upstreams: Mapping[str, Upstream], *, deadline_s: float) -> TimelineBody:
    """The merged timeline of ``workflow_id``; :class:`WorkflowNotFound` if no participant knows it."""
    names = list(upstreams)

    # The same breaker, timeout and counting as every other call to the participant.
    tasks = [asyncio.ensure_future(upstreams[name].history(workflow_id)) for name in names]
    try:
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
    finally:  # past the deadline, or the request itself cancelled: no call outlives it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    entries: list[TimelineEntryBody] = []
    errors: dict[str, FailureKind] = {}
    known = False
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
        if history is None:
            continue
        known = True
        entries += [
            {"participant": name, "state": h.state, "version": h.version, "at": h.at, "source": "live"}
            for h in history
        ]
    if not known and len(errors) == len(names):
        raise NoParticipantAnswered(workflow_id, dict(errors))
    if not known and not errors:
        raise WorkflowNotFound(workflow_id)
    entries.sort(key=lambda e: (e["at"], e["participant"], e["version"] or 0))
    return {"workflow_id": workflow_id, "entries": entries, "errors": errors}
