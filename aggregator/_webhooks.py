"""Webhooks: workflow events POSTed to the receivers the definition names (``[[notify]]``).

Each receiver has its own bounded queue and one delivery task, so events reach it in the order
they were announced (and so in order per workflow), one at a time, and a slow or dead receiver
holds up nobody else. A delivery is the event's CloudEvent in structured mode
(``Content-Type: application/cloudevents+json``) signed with the receiver's secret:
``X-Signature-256: sha256=<hex HMAC-SHA256 of the body>``. It is retried, with exponential
backoff and jitter (or the receiver's ``Retry-After``), after a timeout, a connection failure, a
5xx, 408 or 429 answer, up to the receiver's ``max_attempts``; any other 4xx is final (the
receiver refused it). Events that find the queue full are dropped; every outcome is counted in
``aggregator_webhook_deliveries_total{receiver, outcome}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp

from ._notify import WorkflowEvent
from .definition import NotifyDef
from .metrics import Metrics

log = logging.getLogger(__name__)

#: The first retry's delay; each next one doubles, up to :data:`MAX_RETRY_S` (jittered: 50-100%).
FIRST_RETRY_S = 0.2
#: The longest pause between two attempts (a ``Retry-After`` is capped to it too).
MAX_RETRY_S = 30.0
#: Answers after which an attempt is made again; other 4xx answers are final.
RETRIED = frozenset({408, 429})
CONTENT_TYPE = "application/cloudevents+json"
SIGNATURE_HEADER = "X-Signature-256"


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Signature-256`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (an HTTP date is not honoured: the backoff applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class Receiver:
    """One ``[[notify]]`` receiver: a bounded queue and the task that delivers it in order."""

    def __init__(self, spec: NotifyDef, *, name: str, secret: bytes, metrics: Metrics) -> None:
        self.name = name
        self.url = spec.url
        self._spec = spec
        self._states = frozenset(spec.states) if spec.states is not None else None
        self._secret = secret
        self._metrics = metrics
        self._queue: asyncio.Queue[WorkflowEvent] = asyncio.Queue(maxsize=spec.queue)
        self._where = f"webhook {name} ({urlsplit(spec.url).netloc})"  # never the path: it may hold a token
        self._failing = False

    def wants(self, event: WorkflowEvent) -> bool:
        """Whether this receiver takes events named so."""
        return self._states is None or event.name in self._states

    def __call__(self, event: WorkflowEvent) -> None:
        if not self.wants(event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.webhooks.labels(self.name, "dropped").inc()
            return
        self._metrics.webhooks_queued.labels(self.name).set(self._queue.qsize())

    @property
    def queued(self) -> int:
        """Events waiting for this receiver (not counting the one being delivered)."""
        return self._queue.qsize()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver queued events in order until cancelled."""
        while True:
            event = await self._queue.get()
            self._metrics.webhooks_queued.labels(self.name).set(self._queue.qsize())
            try:
                await self.deliver(session, event)
            except Exception:  # one event that cannot be sent must not stop the others
                log.exception("%s: cannot deliver event %s", self._where, event.id)
                self._metrics.webhooks.labels(self.name, "failed").inc()

    async def deliver(self, session: aiohttp.ClientSession, event: WorkflowEvent) -> str:
        """POST one event, retrying as the module says; its outcome (``delivered``, ``rejected``, ``failed``)."""
        headers = {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: signature(self._secret, event.body),
            "User-Agent": "saga-aggregator",
        }
        timeout = aiohttp.ClientTimeout(total=self._spec.timeout_ms / 1000)
        delay = FIRST_RETRY_S
        attempts = self._spec.max_attempts
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                async with session.post(
                    self.url, data=event.body, headers=headers, timeout=timeout, allow_redirects=False
                ) as answer:
                    status = answer.status
                    retry_after = _retry_after(answer.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
            else:
                if 200 <= status < 300:
                    self._metrics.webhooks.labels(self.name, "delivered").inc()
                    if self._failing:
                        log.info("%s: delivering again", self._where)
                        self._failing = False
                    return "delivered"
                if status < 500 and status not in RETRIED:  # 3xx (not followed) or a final 4xx
                    self._metrics.webhooks.labels(self.name, "rejected").inc()
                    log.warning("%s refused event %s: HTTP %d (not retried)", self._where, event.id, status)
                    return "rejected"
                why = f"HTTP {status}"
            if attempt == attempts:
                break
            self._metrics.webhooks.labels(self.name, "retried").inc()
            pause = delay * random.uniform(0.5, 1.0)
            if retry_after is not None:
                pause = max(pause, retry_after)
            pause = min(pause, MAX_RETRY_S)
            delay = min(delay * 2, MAX_RETRY_S)
            level = logging.DEBUG if self._failing else logging.WARNING
            self._failing = True
            log.log(
                level,
                "%s: %s; retrying in %.2fs (attempt %d of %d)",
                self._where,
                why,
                pause,
                attempt + 1,
                attempts,
            )
            await asyncio.sleep(pause)
        self._metrics.webhooks.labels(self.name, "failed").inc()
        log.warning("%s: gave event %s up after %d attempts (%s)", self._where, event.id, attempts, why)
        return "failed"


class Webhooks:
    """Every receiver of the definition; a sink that hands each event to those that want it."""

    def __init__(self, receivers: Sequence[Receiver]) -> None:
        self.receivers = list(receivers)

    def __call__(self, event: WorkflowEvent) -> None:
        for receiver in self.receivers:
            receiver(event)

    async def run(self) -> None:
        """Deliver to every receiver until cancelled (one HTTP client for all of them)."""
        connector = aiohttp.TCPConnector(limit=max(10, 2 * len(self.receivers)))
        async with aiohttp.ClientSession(connector=connector) as session, asyncio.TaskGroup() as group:
            for receiver in self.receivers:
                group.create_task(receiver.run(session), name=f"webhook-{receiver.name}")
