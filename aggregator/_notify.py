"""Workflow events: a CloudEvent whenever a workflow's derived state changes, stalls or recovers.

In ``events`` mode the aggregator already learns every part change as it happens (the event
feed offers it to the part store). :class:`Announcer` listens to every change in the store,
builds the workflow's view from the parts kept there (asking the participants only for parts
it does not hold) and compares it with the last view it saw of that workflow: a new derived
state is announced as ``workflow.<state>``, a view that became ``stalled`` as
``workflow.stalled``, one that was stalled and no longer is as ``workflow.recovered``. Each
event goes to the broker (:class:`Publisher`, on ``{prefix}/workflow/<state>`` at QoS 1) and to
the definition's webhooks (:mod:`aggregator._webhooks`).

What is kept is only what tells a transition: per workflow, its last derived state and whether
it was stalled, in an LRU of as many workflows as the part store can hold whole. A workflow
evicted from it, or every workflow after a restart, is new again: its next change is announced
even if its state did not change. The event's ``id`` is a digest of the workflow id, the event's
name and the parts' versions, so such a repeat carries the id of the first announcement, and so
do the events of several replicas watching the same broker: consumers drop the duplicates.

A workflow first learnt through a read (not through an event) is only remembered, not announced:
reading an old workflow is not a change of it.

A stall is a change of time, not of a part: each remembered workflow that is not in a terminal
state is due to be looked at again when its newest part becomes ``stall_after_ms`` old (a heap
of due times); a periodic check builds due views again, at most :data:`MAX_STALL_CHECKS` a
second, and announces those now stalled. Only the workflows remembered can be announced stalled;
the initiator's listing (``GET /workflows?stalled=true``) finds the others.

Nothing here blocks or fails a read: the store calls the listener synchronously (a view built
from memory), and what goes out waits in bounded queues whose drops are counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from contract import BrokerURL, epoch_s, stay_connected

from ._store import PartStore
from .definition import RECOVERED, STALLED, Definition
from .metrics import Metrics
from .view import Part, View

log = logging.getLogger(__name__)

#: The ``source`` of every workflow event (the same in every replica, so their ids deduplicate).
SOURCE = "aggregator"
#: Stall checks (views built again because a workflow became due) per second at most.
MAX_STALL_CHECKS = 1000
#: Workflows waiting for a read of the parts not kept (at most; more are dropped).
MAX_READS = 1000
#: Reads of missing parts in flight at once.
_READ_CONCURRENCY = 16
#: Workflow events waiting for the broker at most; past this, new ones are dropped and counted.
QUEUE = 10_000
#: Publishes in flight at once on the broker link.
_BATCH = 64

Build = Callable[[str, dict[str, Part]], View]
"""Builds a workflow's view from parts."""
Read = Callable[[str], Awaitable[Any]]
"""Reads a workflow (asking the participants for the parts not kept); its parts land in the store."""
Spawn = Callable[[Coroutine[Any, Any, Any]], Any]


@dataclass(frozen=True, slots=True)
class WorkflowEvent:
    """One workflow event, ready to go out."""

    name: str
    """The derived state, or ``stalled`` / ``recovered``."""
    id: str
    workflow_id: str
    body: bytes
    """The CloudEvent in structured mode (UTF-8 JSON): the MQTT payload and the webhook body."""


Sink = Callable[[WorkflowEvent], None]
"""Takes an event to send; never blocks (it queues or drops)."""


def event_id(workflow_id: str, name: str, parts: Mapping[str, Part]) -> str:
    """The deterministic id of the event ``name`` of a workflow whose parts are at these versions."""
    fields = [workflow_id, name]
    for participant in sorted(parts):
        part = parts[participant]
        fields.append(f"{participant}:{part.version}:{part.state or ''}")
    return hashlib.blake2b("\x1f".join(fields).encode(), digest_size=16).hexdigest()


def topic_level(name: str) -> str:
    """``name`` as one MQTT topic level: ``/``, ``+``, ``#``, ``%`` and NUL percent-encoded."""
    return "".join(f"%{ord(c):02X}" if c in "/+#%\x00" else c for c in name)


def workflow_event(view: View, name: str) -> WorkflowEvent:
    """The CloudEvent ``workflow.<name>`` about ``view`` (its JSON is the event's ``data``)."""
    identifier = event_id(view.workflow_id, name, view.parts)
    event = {
        "specversion": "1.0",
        "id": identifier,
        "source": SOURCE,
        "type": f"workflow.{name}",
        "subject": view.workflow_id,
        "time": view.generated_at,
        "datacontenttype": "application/json",
        "data": view.to_json(),
    }
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return WorkflowEvent(name=name, id=identifier, workflow_id=view.workflow_id, body=body)


@dataclass(slots=True)
class _Seen:
    """What is remembered of a workflow: enough to tell its next transition."""

    state: str
    stalled: bool
    seq: int
    """Which of the workflow's entries in the due heap is current."""


class Announcer:
    """Tells the sinks of every transition of the workflows whose parts change in the store."""

    def __init__(
        self,
        *,
        definition: Definition,
        store: PartStore,
        build: Build,
        read: Read,
        metrics: Metrics,
        sinks: Iterable[Sink],
        size: int | None = None,
    ) -> None:
        """``size``: workflows remembered (default: as many as the store holds whole)."""
        self._definition = definition
        self._participants = tuple(definition.participants)
        self._store = store
        self._build = build
        self._read = read
        self._metrics = metrics
        self._sinks = list(sinks)
        self.size = size or max(1, definition.settings.cache_size // len(self._participants))
        self._stall_s = definition.settings.stall_after_ms / 1000
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._reads: OrderedDict[str, None] = OrderedDict()
        """Workflows whose parts are not all kept, to read."""
        self._eager: set[str] = set()
        """Workflows to read (or being read) that an event changed: announced when first seen whole."""
        self._wake = asyncio.Event()

    @property
    def interval(self) -> float:
        """How often due workflows are looked at again: a quarter of ``stall_after_ms``, 50 ms to 1 s."""
        return min(1.0, max(0.05, self._stall_s / 4))

    @property
    def remembered(self) -> int:
        """How many workflows are remembered."""
        return len(self._seen)

    def changed(self, workflow_id: str, part: Part) -> None:
        """The store's listener: a part of ``workflow_id`` changed."""
        try:
            self.check(workflow_id, announce=part.source == "event")
        except Exception:  # a listener that raised would fail the event feed or a read
            log.exception("workflow events: cannot check workflow %s", workflow_id)

    def check(self, workflow_id: str, *, announce: bool, read: bool = True) -> None:
        """Build the workflow's view from the store and announce what changed since the last one.

        ``announce``: a workflow not remembered yet is announced (else only remembered). With
        ``read``, a workflow whose parts are not all kept is read first (in the background).
        """
        parts = self._kept(workflow_id)
        if parts is None:
            if read:
                self._want_read(workflow_id, announce)
            return
        self.compare(self._build(workflow_id, parts), announce=announce)

    def _kept(self, workflow_id: str) -> dict[str, Part] | None:
        parts = {}
        for name in self._participants:
            part = self._store.get(name, workflow_id)
            if part is None:
                return None
            parts[name] = part.served_as("event" if part.source == "event" else "cache")
        return parts

    def _want_read(self, workflow_id: str, announce: bool) -> None:
        if workflow_id not in self._reads:
            if len(self._reads) >= MAX_READS:
                self._metrics.workflow_events.labels("unread").inc()
                return
            self._reads[workflow_id] = None
            self._wake.set()
        if announce:
            self._eager.add(workflow_id)

    def compare(self, view: View, *, announce: bool) -> None:
        """Announce what changed between the remembered view of the workflow and ``view``."""
        if not view.complete:
            return  # a state derived without a required part may be wrong: wait for a whole view
        workflow_id = view.workflow_id
        before = self._seen.get(workflow_id)
        names: list[str] = []
        if before is not None:
            if before.stalled and not view.stalled:
                names.append(RECOVERED)
            if before.state != view.state:
                names.append(view.state)
            if view.stalled and not before.stalled:
                names.append(STALLED)
            self._seen.move_to_end(workflow_id)
        elif announce or workflow_id in self._eager:
            names.append(view.state)
            if view.stalled:
                names.append(STALLED)
        self._eager.discard(workflow_id)
        seq = next(self._seq)
        self._seen[workflow_id] = _Seen(state=view.state, stalled=view.stalled, seq=seq)
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        if not view.stalled and self._stall_s > 0:
            self._schedule(workflow_id, view.parts, seq)
        for name in names:
            self._emit(workflow_id, name, view)

    def _schedule(self, workflow_id: str, parts: Mapping[str, Part], seq: int) -> None:
        """Be due to look at the workflow again when its newest part is ``stall_after_ms`` old."""
        rule = self._definition.derive({name: part.state for name, part in parts.items()})
        if rule is not None and rule.terminal:
            return  # a finished workflow never stalls
        times = [at for part in parts.values() if part.updated_at and (at := epoch_s(part.updated_at))]
        now = time.monotonic()
        due = now + self._stall_s
        if times:
            due = now + (max(times) + self._stall_s - time.time())
        heapq.heappush(self._due, (max(due, now + self.interval), seq, workflow_id))
        if len(self._due) > 2 * len(self._seen) + 1024:  # entries superseded pile up: drop them
            self._due = [entry for entry in self._due if self._current(entry)]
            heapq.heapify(self._due)

    def _current(self, entry: tuple[float, int, str]) -> bool:
        seen = self._seen.get(entry[2])
        return seen is not None and seen.seq == entry[1]

    def _emit(self, workflow_id: str, name: str, view: View) -> None:
        event = workflow_event(view, name)
        self._metrics.workflow_events.labels("announced").inc()
        log.debug("workflow %s: %s (event %s)", workflow_id, name, event.id)
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("workflow events: a sink failed on %s", event.id)

    def due_checks(self, now: float | None = None) -> int:
        """Look again at the workflows now due (at most a tick's share of :data:`MAX_STALL_CHECKS`);
        how many were looked at."""
        now = time.monotonic() if now is None else now
        budget = max(1, int(MAX_STALL_CHECKS * self.interval))
        checked = 0
        while self._due and self._due[0][0] <= now and checked < budget:
            entry = heapq.heappop(self._due)
            if not self._current(entry):
                continue
            checked += 1
            try:
                self.check(entry[2], announce=True)
            except Exception:
                log.exception("workflow events: cannot check workflow %s", entry[2])
        return checked

    async def watch_stalls(self) -> None:
        """Look at due workflows every :attr:`interval` until cancelled (never, without ``stall_after_ms``)."""
        if self._stall_s <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.due_checks()

    async def read_missing(self) -> None:
        """Read the workflows whose parts are not all kept, then check them, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._reads:
                batch: list[str] = []
                while self._reads and len(batch) < _READ_CONCURRENCY:
                    workflow_id, _ = self._reads.popitem(last=False)
                    if self._kept(workflow_id) is not None:  # the parts came meanwhile (events)
                        self.check(workflow_id, announce=False, read=False)
                    else:
                        batch.append(workflow_id)
                # The parts read land in the store, whose listener checks the workflow.
                results = await asyncio.gather(*(self._read(wid) for wid in batch), return_exceptions=True)
                for workflow_id, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException) and not isinstance(result, Exception):
                        raise result
                    if isinstance(result, Exception):
                        log.debug("workflow events: cannot read %s: %s", workflow_id, result)
                    self.check(workflow_id, announce=False, read=False)
                    self._eager.discard(workflow_id)

    async def run(self) -> None:
        """Listen to the store and check stalls until cancelled."""
        with self._store.listening_to_all(self.changed):
            async with asyncio.TaskGroup() as group:
                group.create_task(self.watch_stalls(), name="workflow-events-stalls")
                group.create_task(self.read_missing(), name="workflow-events-reads")


class Publisher:
    """Publishes workflow events on ``{prefix}/workflow/<name>`` at QoS 1, through its own broker link.

    A sink: events wait in a queue of at most ``size`` (past it, new events are dropped and
    counted) while the link is down. A batch whose link broke before every PUBACK came is sent
    again on the next link, with the same ids.
    """

    def __init__(self, *, broker: BrokerURL, prefix: str, metrics: Metrics, size: int = QUEUE) -> None:
        self._broker = broker
        self._prefix = prefix
        self._metrics = metrics
        self._size = size
        self._queue: deque[tuple[str, bytes]] = deque()
        self._waiting = asyncio.Event()
        self._client_id = f"aggregator-events-{uuid.uuid4().hex[:12]}"
        self.up = asyncio.Event()
        """Set while the link to the broker is up."""

    def topic(self, name: str) -> str:
        """Where the event ``name`` is published."""
        return f"{self._prefix}/workflow/{topic_level(name)}"

    def __call__(self, event: WorkflowEvent) -> None:
        if len(self._queue) >= self._size:
            self._metrics.workflow_events.labels("dropped").inc()
            return
        self._queue.append((self.topic(event.name), event.body))
        self._metrics.workflow_events_queued.set(len(self._queue))
        self._waiting.set()

    @property
    def queued(self) -> int:
        """Events waiting to be published."""
        return len(self._queue)

    async def run(self) -> None:
        """Stay connected and publish until cancelled."""
        await stay_connected(self._session, broker=self._broker, who="workflow events", log=log)

    async def _session(self) -> None:
        async with self._broker.client(identifier=self._client_id, clean_session=True, timeout=5) as client:
            self.up.set()
            try:
                while True:
                    if not self._queue:
                        self._waiting.clear()
                        await self._waiting.wait()
                        continue
                    batch = list(itertools.islice(self._queue, _BATCH))
                    await asyncio.gather(
                        *(client.publish(topic, body, qos=1, timeout=10) for topic, body in batch)
                    )
                    for _ in batch:
                        self._queue.popleft()
                    self._metrics.workflow_events.labels("published").inc(len(batch))
                    self._metrics.workflow_events_queued.set(len(self._queue))
            finally:
                self.up.clear()
