"""An in-memory participant network behind the aggregator's transport seam, and an upstream over it.

:class:`FakeTransport` answers ``GET /status/{id}`` and the batch ``GET /status?workflow_id=..``
from a dict, per participant (the host of the URL: ``http://payment`` is ``payment``), with a
delay or a failure programmable per call, and logs every call: what the fan-out sends can be
counted without a broker or a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from aggregator._background import Background
from aggregator._client import ParticipantClient
from aggregator._fanout import Upstream
from aggregator._store import PartStore
from aggregator._transport import TransportError, TransportErrorKind
from aggregator.definition import ParticipantDef, Settings
from aggregator.metrics import Metrics

UPDATED_AT = "2026-11-25T12:00:00.000000Z"


@dataclass(frozen=True)
class Reply:
    """How the fake answers one call: after ``delay`` seconds, a failure, an HTTP status, or the records."""

    delay: float = 0.0
    fail: TransportErrorKind | None = None
    status: int | None = None
    busy: float = 0.0
    """Seconds spent answering without yielding to the event loop (a loopback participant's
    fraction of a millisecond, all within one turn of the loop)."""


@dataclass
class Call:
    """One request the fake received."""

    participant: str
    ids: tuple[str, ...]
    batch: bool
    started: float
    outcome: Literal["pending", "answered", "failed", "cancelled"] = "pending"
    ended: float | None = None


@dataclass
class FakeTransport:
    """A :class:`~aggregator._transport.Transport` answering from ``records[participant][workflow_id]``
    (state, version); calls are logged in ``calls``.

    Each call takes the next reply planned for its participant (:meth:`plan`), else what
    ``choose`` picks for it (given the calls so far, itself last), else one with the default
    ``delay``.
    """

    records: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)
    delay: float = 0.0
    choose: Callable[[list[Call]], Reply] | None = None
    calls: list[Call] = field(default_factory=list)
    closed: bool = False
    _planned: dict[str, deque[Reply]] = field(default_factory=dict)

    def plan(self, participant: str, *replies: Reply) -> None:
        """The next calls to ``participant`` get these replies, in order."""
        self._planned.setdefault(participant, deque()).extend(replies)

    def to(self, participant: str = "payment", *, batch: bool | None = None) -> list[Call]:
        """The calls made to ``participant`` (only batch or only single ones, if ``batch`` says)."""
        return [c for c in self.calls if c.participant == participant and batch in (None, c.batch)]

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], *, max_bytes: int
    ) -> tuple[int, Mapping[str, str], bytes]:
        parts = urlsplit(url)
        participant = parts.hostname or ""
        if parts.path == "/status":
            ids, batch = tuple(parse_qs(parts.query).get("workflow_id", [])), True
        else:
            ids, batch = (unquote(parts.path.removeprefix("/status/")),), False
        loop = asyncio.get_running_loop()
        call = Call(participant, ids, batch, loop.time())
        self.calls.append(call)
        planned = self._planned.get(participant)
        if planned:
            reply = planned.popleft()
        elif self.choose is not None:
            reply = self.choose(self.calls)
        else:
            reply = Reply(delay=self.delay)
        if reply.busy:
            until = time.perf_counter() + reply.busy
            while time.perf_counter() < until:
                pass
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
        except asyncio.CancelledError:
            call.outcome, call.ended = "cancelled", loop.time()
            raise
        call.ended = loop.time()
        if reply.fail is not None:
            call.outcome = "failed"
            raise TransportError(reply.fail, f"planned {reply.fail}")
        call.outcome = "answered"
        if reply.status is not None:
            return reply.status, {}, b""
        known = self.records.get(participant, {})
        if batch:
            statuses = [_status(participant, w, *known[w]) for w in ids if w in known]
            body = {"statuses": statuses, "missing": [w for w in ids if w not in known]}
            return 200, {"Date": "Sun, 06 Dec 2026 05:00:00 GMT"}, json.dumps(body).encode()
        if ids[0] not in known:
            return 404, {}, b'{"title": "not found"}'
        return 200, {}, json.dumps(_status(participant, ids[0], *known[ids[0]])).encode()

    async def aclose(self) -> None:
        self.closed = True


def _status(participant: str, workflow_id: str, state: str, version: int) -> dict[str, Any]:
    return {
        "participant": participant,
        "workflow_id": workflow_id,
        "state": state,
        "version": version,
        "updated_at": UPDATED_AT,
        "history": [{"state": state, "version": version, "at": UPDATED_AT}],
    }


@dataclass
class Rig:
    """One participant's :class:`Upstream` over a fake, with what it writes to."""

    upstream: Upstream
    fake: FakeTransport
    store: PartStore
    metrics: Metrics
    background: Background

    def count(self, metric: str, **labels: str) -> float:
        """A metric's value for this participant."""
        return self.metrics.value(metric, participant=self.upstream.name, **labels)


@contextlib.asynccontextmanager
async def upstream_rig(
    fake: FakeTransport, *, name: str = "payment", timeout_ms: int = 1000, **settings: Any
) -> AsyncIterator[Rig]:
    """An :class:`Upstream` for ``name`` over ``fake``, its tasks in a :class:`Background` closed on exit."""
    background = Background()
    await background.open()
    store, metrics = PartStore(1000), Metrics()
    client = ParticipantClient(
        name, ParticipantDef(url=f"http://{name}", timeout_ms=timeout_ms), transport=fake, max_bytes=1 << 20
    )
    upstream = Upstream(
        client,
        settings=Settings(**settings),
        metrics=metrics,
        store=store,
        spawn=background.spawn,
    )
    try:
        yield Rig(upstream, fake, store, metrics, background)
    finally:
        await background.close()
