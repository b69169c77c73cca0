"""The participant's link to the broker: consume with manual acks, relay the outbox, reconnect.

aiomqtt 2.x neither reconnects by itself nor lets a consumer decide when to acknowledge, so:

* each connection is a fresh ``aiomqtt.Client`` entered in a loop with capped, jittered backoff;
  messages queued by a dead connection die with it and the broker redelivers them (persistent
  session: fixed client id, clean session off, QoS 1);
* the underlying paho client is switched to manual acks, and a message is acknowledged only
  after :meth:`Sink.apply` has committed its effects (or after it was dead-lettered), in receipt
  order as MQTT requires;
* the relay publishes outbox rows at QoS 1 and marks them sent only once the broker's PUBACK
  arrived; anything unsent is retried on the next connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiomqtt

from contract import (
    BrokerURL,
    CloudEvent,
    InvalidEvent,
    deadletter_topic,
    iso,
    new_watermark,
    parse_event,
    stay_connected,
    subscribe,
    topic_for,
    utc_now,
    watermark_topic,
)

from .config import DEFAULT_OUTBOX_RETENTION_S, INBOX_RETENTION_S
from .store import Store

log = logging.getLogger(__name__)

_RELAY_BATCH = 100
_RELAY_POLL_S = 1.0
_DEADLETTER_EXCERPT = 4096
_PRUNE_EVERY_S = 300.0
_INBOX_RETENTION = timedelta(seconds=INBOX_RETENTION_S)


class Sink(Protocol):
    """Applies a valid event in one local transaction; returns False for a duplicate."""

    def apply(self, event: CloudEvent) -> bool: ...


class BrokerLink:
    """One participant's broker connection, its consumer and its outbox relay."""

    def __init__(
        self,
        *,
        broker: BrokerURL,
        client_id: str,
        prefix: str,
        name: str,
        accepted: frozenset[str],
        store: Store,
        sink: Sink,
        watermark_s: float = 1.0,
        outbox_retention_s: float = DEFAULT_OUTBOX_RETENTION_S,
    ) -> None:
        self._watermark_s = watermark_s
        self._outbox_retention = timedelta(seconds=outbox_retention_s)
        self._broker = broker
        self._client_id = client_id
        self._prefix = prefix
        self._name = name
        self._accepted = accepted
        self._store = store
        self._sink = sink
        self._outbox_ready = asyncio.Event()
        self.up = asyncio.Event()
        self.counts = {
            "applied": 0,
            "duplicates": 0,
            "deadlettered": 0,
            "published": 0,
            "watermarks": 0,
            "connects": 0,
        }

    @property
    def connected(self) -> bool:
        """Whether the link to the broker is up right now."""
        return self.up.is_set()

    def wake_relay(self) -> None:
        """Tell the relay that new outbox rows were committed."""
        self._outbox_ready.set()

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff whenever the link breaks."""
        await stay_connected(
            self._session,
            broker=self._broker,
            who=self._name,
            log=log,
            transient=(sqlite3.OperationalError,),
        )

    async def _session(self) -> None:
        client = self._broker.client(identifier=self._client_id, clean_session=False, timeout=10)
        # Acknowledge only after the local commit (docs/design.md, "Events"); aiomqtt exposes no switch.
        client._client.manual_ack_set(True)
        # The relay keeps up to _RELAY_BATCH publishes in flight; that is by design, not a leak.
        client.pending_calls_threshold = 10 * _RELAY_BATCH
        async with client:
            topics = sorted({topic_for(self._prefix, t) for t in self._accepted})
            if topics:
                await subscribe(client, topics)
            self.up.set()
            self.counts["connects"] += 1
            log.info("%s: subscribed as %s", self._name, self._client_id)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._consume(client), name=f"{self._name}-consume")
                    tg.create_task(self._relay(client), name=f"{self._name}-relay")
            finally:
                self.up.clear()  # also when cancelled: readiness must not outlive the link

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            try:
                event = parse_event(topic, payload, prefix=self._prefix, accepted=self._accepted)
                applied = self._sink.apply(event)
            except InvalidEvent as exc:
                await self._deadletter(client, topic, exc.reason, payload)
            except sqlite3.OperationalError:
                # Transient (disk, lock): leave it unacknowledged and reconnect, so the broker
                # redelivers it.
                raise
            except Exception as exc:
                # A handler bug must not wedge the queue behind one message: the transaction
                # rolled back, the message is kept in the dead-letter topic, and we move on.
                log.exception("%s: handler failed on %s", self._name, topic)
                await self._deadletter(client, topic, f"handler failed: {exc!r}", payload)
            else:
                self.counts["applied" if applied else "duplicates"] += 1
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)

    async def _deadletter(self, client: aiomqtt.Client, topic: str, reason: str, payload: bytes) -> None:
        parts = topic.split("/")
        producer = parts[1] if len(parts) == 3 and parts[1] else "unknown"
        excerpt = payload[:_DEADLETTER_EXCERPT]
        try:
            text: str | None = excerpt.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        body = {
            "reason": reason,
            "topic": topic,
            "consumer": self._name,
            "received_at": utc_now(),
            "size": len(payload),
            "truncated": len(payload) > len(excerpt),
            "payload": text,
            "payload_base64": None if text is not None else base64.b64encode(excerpt).decode(),
        }
        log.warning("%s: dead-lettering message on %s: %s", self._name, topic, reason)
        await client.publish(deadletter_topic(self._prefix, producer), json.dumps(body), qos=1)
        self.counts["deadlettered"] += 1

    async def _relay(self, client: aiomqtt.Client) -> None:
        next_prune = next_watermark = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._outbox_ready.clear()
            # Taken before the query: every commit before this instant is in what it returns.
            through = utc_now()
            rows = self._store.unsent(_RELAY_BATCH)
            if rows:
                await asyncio.gather(*(client.publish(r.topic, r.payload, qos=1) for r in rows))
                self._store.mark_sent([r.seq for r in rows], utc_now())
                self.counts["published"] += len(rows)
                continue
            if self._watermark_s and loop.time() >= next_watermark:
                # The outbox is empty: everything committed before `through` is published, and
                # acknowledged, on this same connection (so it reaches subscribers first).
                mark = new_watermark(self._name, through)
                # QoS 0, handed to paho directly: the events before it are acknowledged already,
                # a lost one is replaced within an interval, and nothing here waits (aiomqtt's
                # publish waits through a wait_for that can swallow a close's cancellation).
                client._client.publish(watermark_topic(self._prefix, self._name), mark.to_json(), qos=0)
                self.counts["watermarks"] += 1
                next_watermark = loop.time() + self._watermark_s
            if loop.time() >= next_prune:
                self._prune()
                next_prune = loop.time() + _PRUNE_EVERY_S
            wait = _RELAY_POLL_S
            if self._watermark_s:
                wait = max(0.0, min(wait, next_watermark - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: it can lose a cancel on 3.11
                    await self._outbox_ready.wait()

    def _prune(self) -> None:
        # Published events are kept for outbox_retention_s so that they can be republished.
        now = datetime.now(UTC)
        self._store.prune(
            sent_before=iso(now - self._outbox_retention), inbox_before=iso(now - _INBOX_RETENTION)
        )
