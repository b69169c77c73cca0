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
producer's commit), so its age is measured from there, in this aggregator's clock: the
producer's measured clock offset (:mod:`aggregator._clocks`, which every event's and
watermark's time also bounds) corrects it, never making the part look fresher than it is.

Participants read through a mapping publish their own JSON on their own topics: the feed
subscribes to each one's ``events.topic`` filter as well, and reads a message that matches it
through that participant's mapping. Their parts are ordered as their live answers are (by
version, by time, or not at all) and carry the history the feed has seen; a gap in versions asks
for no fetch (a mapped answer brings no history).

The aggregators' own workflow events (``{prefix}/workflow/<state>``, :mod:`aggregator._notify`)
match the subscription too, and are skipped without being counted.

Nothing a broker client publishes can stop the feed: a payload that is not a valid event of a
known participant is counted (``aggregator_events_total{outcome="ignored"}``, or ``"unmapped"``
for one on a mapped participant's topic that does not map, logged at most every few seconds
per participant) and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import aiomqtt

from contract import (
    BrokerURL,
    InvalidEvent,
    epoch_s,
    parse_event,
    parse_watermark,
    stay_connected,
    subscribe,
    utc_now,
)

from ._clocks import Clocks
from ._mapper import Mapper, MappingProblem, parse_json
from ._store import PartStore
from .mapping import topic_matches
from .metrics import Metrics
from .view import Part

log = logging.getLogger(__name__)

#: A mapped participant's events that do not map are logged at most once per this many seconds.
_UNMAPPED_LOG_EVERY_S = 10.0
#: The most states a mapped participant's part remembers from its events.
_MAX_HISTORY = 64
#: Mapped event payloads past this size are not read.
MAX_EVENT_BYTES = 256 * 1024


def part_from_event(
    topic: str,
    payload: bytes,
    *,
    prefix: str,
    participants: frozenset[str],
    clocks: Clocks | None = None,
) -> tuple[str, Part] | None:
    """``(workflow_id, part)`` for a valid event of a known participant, else None.

    With ``clocks``, the event's ``time`` bounds its producer's clock offset, and its age is
    measured from that time corrected by the offset (:attr:`ClockOffset.for_staleness`).
    """
    levels = topic.split("/")
    if len(levels) != 3 or levels[1] not in participants:
        return None
    try:
        event = parse_event(topic, payload, prefix=prefix, accepted=None)
    except InvalidEvent:
        return None
    at = epoch_s(event.time)
    if at is None:
        return None
    lag = _lag(event.source, at, clocks)
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


def _lag(producer: str, at: float, clocks: Clocks | None, *, stamped: float | None = None) -> float:
    """How long ago (never less than 0: a producer's clock ahead of ours must not make parts
    look fresher) ``producer``'s time ``at`` (its clock, POSIX seconds) was, in this clock:
    corrected by its measured offset. ``stamped`` (default ``at``), the time it stamped on what
    just arrived, bounds that offset first."""
    now = time.time()
    if clocks is not None:
        clocks.stamped(producer, at if stamped is None else stamped, now)
        at -= clocks.stale_corrections.get(producer, 0.0)
    return max(0.0, now - at)


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
        mappers: dict[str, Mapper] | None = None,
        clocks: Clocks | None = None,
    ) -> None:
        """``participants`` publish the contract's events under ``prefix``; ``mappers`` (by
        participant) read the others' own events on their own topics; ``clocks`` learns their
        clocks' offsets from the events' times and corrects the events' ages by them."""
        self._broker = broker
        self._clocks = clocks
        self._mappers = mappers or {}
        self._everyone = participants | frozenset(self._mappers)
        self._unmapped_logged: dict[str, tuple[float, int]] = {}
        """Per mapped participant: when its last unmapped event was logged, and how many since."""
        self.heard: dict[str, float] = {}
        """Per participant, ``time.monotonic()`` of its last event or watermark (this epoch only)."""
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

    @property
    def topics(self) -> list[str]:
        """The topic filters the feed subscribes to: the contract's, and each mapped participant's."""
        own = [f"{self._prefix}/+/+"]
        for mapper in self._mappers.values():
            assert mapper.events is not None
            if mapper.events.topic not in own:
                own.append(mapper.events.topic)
        return own

    async def run(self) -> None:
        """Stay subscribed until cancelled."""
        await stay_connected(self._session, broker=self._broker, who="event feed", log=log)

    async def _session(self) -> None:
        try:
            async with self._broker.client(
                identifier=self._client_id, clean_session=True, timeout=5
            ) as client:
                await subscribe(client, self.topics)
                # A new epoch starts *before* any event of this subscription is applied; the
                # watermarks of the last one say nothing about what was missed in between.
                self._epoch = time.monotonic()
                self.watermarks = {}
                self.heard = {}
                self.up.set()
                self._metrics.broker_connected.set(1)
                log.info("event feed subscribed to %s", ", ".join(self.topics))
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
        if topic.startswith(f"{self._prefix}/workflow/") and "workflow" not in self._participants:
            return  # an aggregator's own workflow events (this one's, or a replica's)
        if self._mappers and self._mapped(topic, raw):
            return
        try:
            found = part_from_event(
                topic, raw, prefix=self._prefix, participants=self._participants, clocks=self._clocks
            )
        except Exception:  # parse_event is total; this guards the feed against what it did not foresee
            log.exception("event feed: unexpected error parsing a message on %s", topic[:200])
            found = None
        if found is None:
            self._metrics.events.labels("ignored").inc()
            return
        self.apply(*found)

    def _mapped(self, topic: str, raw: bytes) -> bool:
        """Read a message on mapped participants' topics; False if it is on none of them."""
        matched = False
        doc: object = None
        for name, mapper in self._mappers.items():
            assert mapper.events is not None
            if not topic_matches(mapper.events.topic, topic):
                continue
            if not matched:
                matched = True
                try:
                    if len(raw) > MAX_EVENT_BYTES:
                        raise MappingProblem("bad_response", f"payload over {MAX_EVENT_BYTES} bytes")
                    doc = parse_json(raw)
                except MappingProblem as problem:
                    self._unmapped(name, topic, problem)
                    return True
            try:
                workflow_id, mapped = mapper.event(doc)
            except MappingProblem as problem:
                self._unmapped(name, topic, problem)
                continue
            now = time.monotonic()
            if mapped.epoch is not None:
                lag = _lag(name, mapped.epoch, self._clocks)
                observed, observed_at = now - lag, mapped.updated_at or utc_now()
            else:
                observed, observed_at = now, utc_now()
            part = Part(
                name,
                mapped.state,
                mapped.order_key(mapper.order),
                mapped.updated_at,
                observed,
                observed_at,
                "event",
                received=now,
                order=mapper.order,
            )
            self.apply_mapped(workflow_id, part)
        return matched

    def _unmapped(self, name: str, topic: str, problem: MappingProblem) -> None:
        """Count an event of a mapped participant that does not map; log it, a few at most."""
        self._metrics.events.labels("unmapped").inc()
        now = time.monotonic()
        last, since = self._unmapped_logged.get(name, (-_UNMAPPED_LOG_EVERY_S, 0))
        if now - last < _UNMAPPED_LOG_EVERY_S:
            self._unmapped_logged[name] = (last, since + 1)
            return
        more = f" ({since} more since the last report)" if since else ""
        log.warning(
            "event feed: %s's event on %s does not map: %s%s", name, topic[:200], problem.detail, more
        )
        self._unmapped_logged[name] = (now, 0)

    def apply_mapped(self, workflow_id: str, part: Part) -> None:
        """Offer a mapped event's part: newer by its order (version or time; any, without one)."""
        self.heard[part.participant] = time.monotonic()
        kept = self._store.get(part.participant, workflow_id)
        if (
            kept is not None
            and kept.state is not None
            and (part.version < kept.version or (part.version == kept.version and part.order != "none"))
        ):
            self._metrics.events.labels("old").inc()
            return
        self._metrics.events.labels("applied").inc()
        # The states this feed saw, as the contract's events build a history (bounded: a mapped
        # participant's events carry no history of their own to bound it).
        past = kept.history[-(_MAX_HISTORY - 1) :] if kept is not None and kept.state is not None else ()
        if part.state is not None:
            part = replace(part, history=past if past and past[-1] == part.state else (*past, part.state))
        self._store.offer(workflow_id, part)
        if (
            part.participant == self._initiator
            and kept is None
            and part.order == "version"
            and part.version == 1
        ):
            self._absent_elsewhere(workflow_id, part)

    def _watermark(self, topic: str, raw: bytes) -> None:
        """Note a producer's watermark: its parts are known up to ``through``."""
        try:
            mark = parse_watermark(topic, raw, prefix=self._prefix)
        except InvalidEvent:
            self._metrics.events.labels("ignored").inc()
            return
        through, stamped = epoch_s(mark.through), epoch_s(mark.time)
        if through is None or stamped is None or mark.source not in self._participants:
            self._metrics.events.labels("ignored").inc()
            return
        lag = _lag(mark.source, through, self._clocks, stamped=stamped)
        self.heard[mark.source] = time.monotonic()
        at = time.monotonic() - lag
        if at > self.watermarks.get(mark.source, 0.0):
            self.watermarks[mark.source] = at
        self._metrics.events.labels("watermark").inc()

    def floor(self, part: Part) -> float:
        """How recent ``part`` is known to be (``time.monotonic()``): its producer's watermark when
        the part was learnt in this epoch (nothing it published since could have been missed),
        else the part's own observation."""
        if self.up.is_set() and part.learnt >= self._epoch:
            return max(part.observed, self.watermarks.get(part.participant, 0.0))
        return part.observed

    def silent(self, *, after_s: float) -> list[str]:
        """The participants that speak the contract and published nothing (no event, no
        watermark) since the subscription came up, once it has been up ``after_s`` seconds
        (they send a watermark every second by default: one silent this long is likely down)."""
        if not self.up.is_set() or time.monotonic() - self._epoch < after_s:
            return []
        return sorted(self._participants - set(self.heard))

    def apply(self, workflow_id: str, part: Part) -> None:
        """Offer one event's carried state: monotonic, with a fetch when versions were skipped."""
        self.heard[part.participant] = time.monotonic()
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
        so, with the feed up since before that event, "no record" is known without asking, of
        those heard since the feed came up (a participant that never came up is asked, and its
        part is then missing, not "no record").
        """
        if created.learnt < self._epoch:
            return
        for name in self._everyone - {created.participant}:
            if name not in self.heard:
                continue  # not heard since the subscription came up: maybe down, so not known absent
            if self._store.get(name, workflow_id) is None:
                order = self._mappers[name].order if name in self._mappers else "version"
                absent = replace(
                    created, participant=name, state=None, version=0, updated_at=None, history=(), order=order
                )
                self._store.offer(workflow_id, absent)
