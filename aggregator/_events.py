"""The event feed: the participants' own events, applied to the part store as they arrive.

The feed subscribes to ``{prefix}/+/+`` with a clean session and a client id of its own (so
replicas never share or steal each other's subscription) and turns each valid saga event into
a part with ``source: event``, offered to the store monotonically: an event one version past
the part kept extends its history; an older one is dropped; one that skips versions (or a
first event past version 1) is still the newest state known, and asks for a fetch that brings
the history. Each time the subscription comes up a new *epoch* starts: parts last confirmed
before it may have missed events while the link was down, so the ``events`` freshness policy
revalidates them before serving them again.

Staleness stays honest: an event proves the part's state at the event's ``time`` (the
producer's commit), so its age is measured from there (participants' clocks are assumed to be
synchronized; the skew would be added to the error).

Nothing a broker client publishes can stop the feed: a payload that is not a valid event of a
known participant is counted (``aggregator_events_total{outcome="ignored"}``) and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import aiomqtt

from contract import BrokerURL, InvalidEvent, age_s, parse_event, parse_watermark, stay_connected, subscribe

from ._store import PartStore
from .metrics import Metrics
from .view import Part

log = logging.getLogger(__name__)


def part_from_event(
    topic: str, payload: bytes, *, prefix: str, participants: frozenset[str]
) -> tuple[str, Part] | None:
    """``(workflow_id, part)`` for a valid event of a known participant, else None."""
    levels = topic.split("/")
    if len(levels) != 3 or levels[1] not in participants:
        return None
    try:
        event = parse_event(topic, payload, prefix=prefix, accepted=None)
    except InvalidEvent:
        return None
    lag = age_s(event.time)
    if lag is None:
        return None
    part = Part(
        participant=event.source,
        state=event.data.state,
        version=event.data.version,
        updated_at=event.time,
        observed=time.monotonic() - lag,
        observed_at=event.time,
        source="event",
        received=time.monotonic(),
    )
    return event.subject, part


class EventFeed:
    """Subscribes to the saga's events and offers each valid one to the store."""

    def __init__(
        self,
        *,
        broker: BrokerURL,
        prefix: str,
        participants: frozenset[str],
        store: PartStore,
        refresh: Callable[[str, str], None],
        metrics: Metrics,
        initiator: str | None = None,
    ) -> None:
        self._broker = broker
        self._initiator = initiator
        self.watermarks: dict[str, float] = {}
        """Per producer, ``time.monotonic()`` of the latest watermark's ``through`` (this epoch only)."""
        self._prefix = prefix
        self._participants = participants
        self._store = store
        self._refresh = refresh
        self._metrics = metrics
        self._client_id = f"aggregator-{uuid.uuid4().hex[:12]}"
        self.up = asyncio.Event()
        self._epoch = time.monotonic()
        self.outages = 0

    @property
    def healthy(self) -> bool:
        """Whether the subscription is up right now."""
        return self.up.is_set()

    @property
    def epoch(self) -> float:
        """``time.monotonic()`` when the current subscription came up."""
        return self._epoch

    async def run(self) -> None:
        """Stay subscribed until cancelled."""
        await stay_connected(self._session, broker=self._broker, who="event feed", log=log)

    async def _session(self) -> None:
        try:
            async with self._broker.client(
                identifier=self._client_id, clean_session=True, timeout=5
            ) as client:
                await subscribe(client, [f"{self._prefix}/+/+"])
                # A new epoch starts *before* any event of this subscription is applied; the
                # watermarks of the last one say nothing about what was missed in between.
                self._epoch = time.monotonic()
                self.watermarks = {}
                self.up.set()
                self._metrics.broker_connected.set(1)
                log.info("event feed subscribed to %s/+/+", self._prefix)
                async for message in client.messages:
                    self.handle(message.topic.value, message.payload)
        except aiomqtt.MqttError:
            if self.up.is_set():
                self.outages += 1
                log.warning("event feed lost the broker: serving with ttl freshness until it is back")
            raise
        finally:
            self.up.clear()
            self._metrics.broker_connected.set(0)

    def handle(self, topic: str, payload: object) -> None:
        """Apply one message; anything that is not a valid event of a known participant is counted and dropped."""
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
        if topic.startswith(f"{self._prefix}/watermark/"):
            self._watermark(topic, raw)
            return
        try:
            found = part_from_event(topic, raw, prefix=self._prefix, participants=self._participants)
        except Exception:  # parse_event is total; this guards the feed against what it did not foresee
            log.exception("event feed: unexpected error parsing a message on %s", topic[:200])
            found = None
        if found is None:
            self._metrics.events.labels("ignored").inc()
            return
        self.apply(*found)

    def _watermark(self, topic: str, raw: bytes) -> None:
        """Note a producer's watermark: its parts are known up to ``through``."""
        try:
            mark = parse_watermark(topic, raw, prefix=self._prefix)
        except InvalidEvent:
            self._metrics.events.labels("ignored").inc()
            return
        # Never in the future (age_s is never negative): a producer's clock ahead of ours must
        # not make parts look fresher.
        lag = age_s(mark.through)
        if lag is None or mark.source not in self._participants:
            self._metrics.events.labels("ignored").inc()
            return
        at = time.monotonic() - lag
        if at > self.watermarks.get(mark.source, 0.0):
            self.watermarks[mark.source] = at
        self._metrics.events.labels("watermark").inc()

    def floor(self, part: Part) -> float:
        """How recent ``part`` is known to be (``time.monotonic()``): its producer's watermark when
        the part was learnt in this epoch (nothing it published since could have been missed),
        else the part's own observation."""
        if self.up.is_set() and part.observed >= self._epoch:
            return max(part.observed, self.watermarks.get(part.participant, 0.0))
        return part.observed

    def apply(self, workflow_id: str, part: Part) -> None:
        """Offer one event's carried state: monotonic, with a fetch when versions were skipped."""
        kept = self._store.get(part.participant, workflow_id)
        known = kept.version if kept else 0
        if part.version <= known:
            self._metrics.events.labels("old").inc()
            return
        if part.version == known + 1:
            part = replace(part, history=(*(kept.history if kept else ()), part.state or ""))
            self._metrics.events.labels("applied").inc()
        else:
            # A gap: versions were missed (or the part is unknown past its first version). The
            # event's state is still the newest known; a fetch brings the history.
            self._metrics.events.labels("gap").inc()
            self._refresh(part.participant, workflow_id)
        self._store.offer(workflow_id, part)
        if part.participant == self._initiator and known == 0 and part.version == 1:
            self._absent_elsewhere(workflow_id, part)

    def _absent_elsewhere(self, workflow_id: str, created: Part) -> None:
        """The initiator just created the workflow: the others, silent so far, have no part yet.

        They can only act on it after the initiator's event, and would publish what they do;
        so, with the feed up since before that event, "no record" is known without asking.
        """
        if created.observed < self._epoch:
            return
        for name in self._participants - {created.participant}:
            if self._store.get(name, workflow_id) is None:
                absent = replace(
                    created, participant=name, state=None, version=0, updated_at=None, history=()
                )
                self._store.offer(workflow_id, absent)
