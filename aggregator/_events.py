"""The ``events`` freshness mode: the participants' own events keep the part cache fresh.

The feed subscribes to ``{prefix}/+/+`` with a clean session and a client id of its own (so
replicas never share or steal each other's subscription) and turns each valid saga event into
a part with ``source: event``. aiomqtt does not reconnect by itself; the feed re-enters the
client in a loop with capped backoff. Each time the subscription comes up it starts a new
*epoch*: parts last confirmed before the epoch may have missed events while the link was down,
so they are revalidated before being served again (see ``Aggregator``).

Staleness stays honest: an event proves the part's state at the event's ``time`` (the
producer's commit), so its age is measured from there (participants' clocks are assumed to be
synchronized; the skew would be added to the error).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt

from participants.config import BrokerURL
from participants.errors import InvalidEvent
from participants.events import parse_event

from .metrics import Metrics
from .view import Part

log = logging.getLogger(__name__)


#: Events larger than this are ignored unparsed.
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
    try:
        produced = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if produced.tzinfo is None:
        produced = produced.replace(tzinfo=UTC)
    lag = max(0.0, (datetime.now(UTC) - produced).total_seconds())
    part = Part(
        participant=event.source,
        state=event.data.state,
        version=event.data.version,
        updated_at=event.time,
        observed=time.monotonic() - lag,
        observed_at=event.time,
        source="event",
    )
    return event.subject, part


class EventFeed:
    """Subscribes to the saga's events and hands each valid one to ``apply``."""

    def __init__(
        self,
        *,
        broker: BrokerURL,
        prefix: str,
        participants: frozenset[str],
        apply: Callable[[str, Part], None],
        metrics: Metrics,
    ) -> None:
        self._broker = broker
        self._prefix = prefix
        self._participants = participants
        self._apply = apply
        self._metrics = metrics
        self._client_id = f"aggregator-{uuid.uuid4().hex[:12]}"
        self.up = asyncio.Event()
        self.epoch = time.monotonic()
        """``time.monotonic()`` when the current subscription came up."""
        self.outages = 0

    @property
    def healthy(self) -> bool:
        """Whether the subscription is up right now."""
        return self.up.is_set()

    async def run(self) -> None:
        """Stay subscribed until cancelled."""
        delay = 0.05
        while True:
            try:
                async with self._broker.client(
                    identifier=self._client_id, clean_session=True, timeout=5
                ) as client:
                    await client.subscribe(f"{self._prefix}/+/+", qos=1)
                    # A new epoch starts *before* any event of this subscription is applied.
                    self.epoch = time.monotonic()
                    self.up.set()
                    self._metrics.broker_connected.set(1)
                    delay = 0.05
                    log.info("event feed subscribed to %s/+/+ on %s", self._prefix, self._broker)
                    async for message in client.messages:
                        self._handle(message)
            except aiomqtt.MqttError as exc:
                if self.up.is_set():
                    self.outages += 1
                    log.warning("event feed lost the broker (%s): falling back to ttl", exc)
            finally:
                self.up.clear()
                self._metrics.broker_connected.set(0)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)

    def _handle(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        found = part_from_event(
            message.topic.value, payload, prefix=self._prefix, participants=self._participants
        )
        if found is None:
            self._metrics.events.labels("ignored").inc()
            return
        self._apply(*found)
