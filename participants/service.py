"""A running participant: its store, its broker link and its HTTP server, as one lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from contract import (
    CloudEvent,
    cancel_and_wait,
    command_type,
    new_event,
    serve_app,
    topic_for,
    tracing,
    utc_now,
)

from ._bus import BrokerLink
from .config import ParticipantConfig
from .http import create_app
from .spec import HandlerContext, ParticipantSpec, Transition
from .store import Store, Transaction, WorkflowStatus

log = logging.getLogger(__name__)


class ParticipantService:
    """Runs one :class:`ParticipantSpec`: ``async with ParticipantService(spec, config=cfg) as svc``.

    On entry the database is opened, the HTTP server listens (``svc.url``; port 0 picks a free
    one) and the broker link starts in the background; on exit everything is stopped and closed.
    With ``serve_http=False`` nothing listens: mount ``participants.http.create_app(svc)`` in an
    application of your own instead.
    """

    def __init__(
        self, spec: ParticipantSpec[Any], *, config: ParticipantConfig, serve_http: bool = True
    ) -> None:
        self.spec = spec
        self._serve_http = serve_http
        self.config = config
        self.store = Store(config.db, extra_schema=spec.schema)
        self.client_id = config.client_id or self.store.meta(
            "mqtt_client_id", f"{config.prefix}-{spec.name}-{uuid.uuid4().hex[:12]}"
        )
        self.link = BrokerLink(
            broker=config.broker,
            client_id=self.client_id,
            prefix=config.prefix,
            name=spec.name,
            accepted=frozenset(spec.handlers),
            store=self.store,
            sink=self,
            watermark_s=config.watermark_ms / 1000,
            outbox_retention_s=config.outbox_retention_s,
        )
        self.counts = {
            "status_requests": 0,
            "batch_requests": 0,
            "listing_requests": 0,
            "republish_requests": 0,
        }
        self.url = ""
        self._link_task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def name(self) -> str:
        """The participant's name (``payment``)."""
        return self.spec.name

    @property
    def ready(self) -> bool:
        """Database open and broker connected."""
        return self.store.is_open and self.link.connected

    async def __aenter__(self) -> Self:
        try:
            if self._serve_http:
                # serve_app's request-line bound (contract.MAX_REQUEST_LINE) fits a full batch.
                self.url = await self._stack.enter_async_context(
                    serve_app(
                        create_app(self),
                        self.config.host,
                        self.config.port,
                        head_timeout=self.config.head_timeout_s,
                    )
                )
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._link_task = tasks.create_task(self.link.run(), name=f"{self.name}-broker-link")
        except BaseException:
            await self._close()
            raise
        log.info(
            "%s: serving on %s (db %s, auth: %s)",
            self.name,
            self.url or "(not served)",
            self.config.db,
            "bearer token" if self.config.token else "off",
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._link_task is not None:
            await cancel_and_wait(self._link_task)
        try:
            await self._stack.aclose()
        finally:
            self.store.close()

    async def wait_ready(self) -> None:
        """Wait until the broker link is up (wrap in ``asyncio.timeout`` to bound it)."""
        await self.link.up.wait()

    def republish(self, workflow_id: str) -> int:
        """Publish again, with their original ids, the events this participant produced for
        ``workflow_id`` (those still in the outbox: see ``outbox_retention_s``); how many.

        Consumers' inboxes drop the ones they already applied, so this changes no state that
        the events did not already change: it redrives a workflow whose events were lost.
        """
        count = self.store.republish(workflow_id)
        if count:
            self.link.wake_relay()
        return count

    # -- state changes -------------------------------------------------------------------

    def apply(self, event: CloudEvent) -> bool:
        """Apply one event at most once, with its effects and outbox rows in one transaction.

        With tracing on, in a consumer span continuing the event's ``traceparent``: the events
        this one causes carry that span as their parent.
        """
        traced = (
            tracing.span(
                f"{event.type} process",
                kind="consumer",
                parent=event.traceparent,
                attributes={
                    "saga.participant": self.name,
                    "saga.workflow_id": event.subject,
                    "saga.event": event.type,
                },
            )
            if tracing.enabled()
            else contextlib.nullcontext()
        )
        with traced, self.transaction() as tx:
            if tx.seen(event.id):
                return False
            tx.remember(event.id, event.type, utc_now())
            current = tx.get(event.subject)
            handler = self.spec.handlers[event.type]
            decision = handler(HandlerContext(event, current, self.spec.settings, tx.conn))
            if decision is not None:
                self.commit(tx, event.subject, current, decision, cause=event)
        return True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A store transaction that wakes the outbox relay after it commits."""
        with self.store.transaction() as tx:
            yield tx
        self.link.wake_relay()

    def commit(
        self,
        tx: Transaction,
        workflow_id: str,
        current: WorkflowStatus | None,
        decision: Transition,
        *,
        cause: CloudEvent | None,
    ) -> WorkflowStatus:
        """Write ``decision`` as the next version and enqueue the event announcing it."""
        now = utc_now()
        status = WorkflowStatus(
            workflow_id=workflow_id,
            state=decision.state,
            version=(current.version if current else 0) + 1,
            updated_at=now,
            data={**(current.data if current else {}), **decision.data},
        )
        # The event announcing the new version (unless the decision emits none), then its commands.
        announced = [] if decision.emit is None else [(decision.emit, None, decision.data)]
        sent = [(c.action, command_type(c.participant, c.action), c.data) for c in decision.commands]
        events = [
            new_event(
                source=self.name,
                name=name,
                type_=type_,
                subject=workflow_id,
                state=status.state,
                version=status.version,
                domain=dict(data),
                cause=cause,
                time=now,
            )
            for name, type_, data in announced + sent
        ]
        # The history entry names the event it publishes and the one that caused it, so that a
        # reader orders transitions causally whatever the participants' clocks say.
        tx.put(status, event=events[0].id if events else None, cause=cause.id if cause else None)
        for event in events:
            tx.enqueue(
                topic_for(self.config.prefix, event.type), event.to_json(), now, workflow_id=workflow_id
            )
        return status
