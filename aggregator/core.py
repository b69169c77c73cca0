"""The :class:`Aggregator`: reconstructs workflow views on demand from their participants.

``async with Aggregator(definition) as agg: view = await agg.view("ord-42")``. It is a
composition of small pieces (docs/design.md, "Architecture"):

* a :class:`~aggregator._store.PartStore`, the one place parts are kept, merged monotonically
  and listened to;
* a freshness policy (:mod:`aggregator._freshness`) that says when a kept part may be served;
* one :class:`~aggregator._fanout.Upstream` per participant (single flight, batching, breaker,
  hedging) over one :class:`~aggregator._transport.Transport`, whose answers land in the store;
* in ``events`` mode, an :class:`~aggregator._events.EventFeed` whose events land there too;
* in ``events`` mode, an :class:`~aggregator._notify.Announcer` that listens to the store and
  announces workflows' transitions on the broker and to webhooks (:mod:`aggregator._webhooks`);
* :class:`~aggregator._background.Background`, which owns every task those pieces start.

A read serves what the policy allows from the store, asks the participants for the rest
concurrently within one deadline, and returns what arrived: a part that failed carries its
error, and only when nothing at all is known does a read fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp

from contract import BrokerURL, ContractError

from ._aiohttp import AiohttpTransport
from ._background import Background
from ._breaker import BreakerState
from ._clocks import Clocks, probe_clocks
from ._events import EventFeed
from ._fanout import Upstream
from ._fleet import Fleet, FleetPage, FleetQuery, Summary
from ._freshness import Freshness, policy_for
from ._http1 import Http1Pool
from ._jobs import Jobs
from ._mapped import client_for
from ._mapper import Mapper
from ._notify import Announcer, Publisher
from ._reads import Reads, check_workflow_id
from ._redrive import Stalls
from ._store import PartStore
from ._timeline import timeline
from ._transport import Transport
from ._watch import Watchers, watch_views
from ._webhooks import Receiver, Webhooks
from .definition import Definition
from .errors import (
    AggregatorError,
    ConfigError,
    DefinitionError,
    NoInitiator,
    NotOpen,
    NotSupported,
)
from .metrics import Metrics
from .options import ReadOptions
from .schema import TimelineBody
from .view import View

log = logging.getLogger("aggregator")

LifecycleState = Literal["new", "open", "closed"]

#: How ``/readyz`` reports a participant, as it last answered: ``unknown`` before any call or
#: probe, ``unreachable`` after one that failed, ``failing`` while its circuit is open (calls
#: paused), ``probing`` while one call tests it again, ``ok`` after one it answered.
ParticipantHealth = Literal["unknown", "ok", "unreachable", "failing", "probing"]

#: How long the start-up probe (:meth:`Aggregator.probe`) waits for each participant at most.
PROBE_TIMEOUT_S = 2.0

#: In events mode, a participant that publishes nothing this long after the feed came up is
#: reported silent (participants send a watermark every second by default).
SILENT_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Health:
    """What the aggregator can tell about its own state (``/readyz`` shows it)."""

    ready: bool
    """Open and able to serve."""
    breakers: Mapping[str, BreakerState]
    """Per participant, its circuit breaker: ``closed``, ``open`` (failing) or ``half_open``
    (a probe is allowed); empty before entry."""
    degraded: str | None
    """Why the configured freshness is not in force right now, if it is not."""
    silent: Sequence[str] = ()
    """In ``events`` mode, the participants that published nothing (no event, no watermark)
    since the event feed came up :data:`SILENT_AFTER_S` or more ago."""
    participants: Mapping[str, ParticipantHealth] = field(default_factory=dict)
    """Per participant, how it last answered (see :data:`ParticipantHealth`); empty before entry."""

    @property
    def failing(self) -> list[str]:
        """The participants whose circuit is not closed (failing, or being probed)."""
        return [name for name, state in self.breakers.items() if state != "closed"]

    @property
    def unreachable(self) -> list[str]:
        """The participants whose last call or probe failed (their circuit still closed)."""
        return [name for name, shown in self.participants.items() if shown == "unreachable"]


def _participant_health(breaker: BreakerState, last: str | None) -> ParticipantHealth:
    if breaker == "open":
        return "failing"
    if breaker == "half_open":
        return "probing"
    return "unknown" if last is None else "ok" if last == "ok" else "unreachable"


@dataclass(frozen=True, slots=True)
class _Opened:
    """What entering builds: one upstream per participant over one transport, and reads over them."""

    upstreams: dict[str, Upstream]
    reads: Reads
    stalls: Stalls
    fleet: Fleet
    jobs: Jobs
    owned: Transport | None
    """The transport the aggregator opened itself (closed on exit); None when it was given."""


class Aggregator:
    """Reconstructs workflow views from the participants named in a :class:`Definition`.

    An async context manager, entered once: on entry it opens its own
    :class:`~aggregator._http1.Http1Pool` (keep-alive connections to the participants) unless
    an ``aiohttp.ClientSession`` is given with ``session=`` or a transport with ``transport=``
    (either stays open: it belongs to whoever gave it), builds one upstream per participant and,
    in ``events`` mode, subscribes to ``broker``; on exit it cancels every background task and
    closes what it opened. Reading before entry or after exit raises :class:`NotOpen`.

    ``metrics``, ``store``, ``watchers`` and ``feed`` (None unless in ``events`` mode) are
    there from construction, for embedding applications and tests to read.
    """

    def __init__(
        self,
        definition: Definition,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        broker: BrokerURL | str | None = None,
        prefix: str = "saga",
        redrive: Literal["off", "auto"] = "off",
    ) -> None:
        self.definition = definition
        self.settings = settings = definition.settings
        _, self._outbound_tokens = definition.credentials()  # an empty configured token fails here
        for name, spec in definition.participants.items():  # and so does a mapped header's unset variable
            if spec.status is not None:
                spec.status.request_headers(f"participants.{name}.status")
        if session is not None and transport is not None:
            raise ConfigError("give the aggregator a session or a transport, not both")
        self._given: Transport | None = AiohttpTransport(session) if session is not None else transport
        """A transport from the embedding application, used for every participant call; never closed here."""
        if isinstance(broker, str):
            try:
                broker = BrokerURL.parse(broker)
            except ContractError as exc:
                raise ConfigError(str(exc)) from exc
        if settings.freshness == "events" and broker is None:
            raise DefinitionError(
                "freshness 'events' needs a broker to subscribe to", field="settings.freshness"
            )
        if redrive == "auto" and definition.initiator is None:
            raise DefinitionError("--redrive auto needs the definition's initiator", field="initiator")
        if (
            redrive == "auto"
            and definition.initiator
            and definition.participants[definition.initiator].mapped
        ):
            raise DefinitionError(
                f"--redrive auto needs the initiator's listing, and {definition.initiator} is read "
                "through a mapping (it has none)",
                field="initiator",
            )
        self._redrive = redrive
        self.metrics = Metrics()
        self.clocks = Clocks(list(definition.participants), metrics=self.metrics)
        """Each participant's clock offset, measured from its answers and events (``/healthz``)."""
        self.store = PartStore(settings.cache_size)
        self.feed: EventFeed | None = None
        participants = definition.participants
        silent = frozenset(n for n, p in participants.items() if p.mapped and p.events is None)
        if settings.freshness == "events" and broker is not None:
            self.feed = EventFeed(
                broker=broker,
                prefix=prefix,
                participants=frozenset(n for n, p in participants.items() if not p.mapped),
                mappers={n: Mapper(p) for n, p in participants.items() if p.events is not None},
                store=self.store,
                refresh=self._refresh,
                metrics=self.metrics,
                initiator=definition.initiator,
                clocks=self.clocks,
            )
        self.freshness: Freshness = policy_for(settings, self.feed, silent=silent)
        self.publisher: Publisher | None = None
        """In ``events`` mode, what publishes the workflow events (docs/howto/notify.md)."""
        self.webhooks = Webhooks(
            [
                Receiver(
                    spec, name=spec.name or str(i), secret=spec.secret(f"notify[{i}]"), metrics=self.metrics
                )
                for i, spec in enumerate(definition.notify)
            ]
        )
        """The definition's ``[[notify]]`` receivers."""
        self.announcer: Announcer | None = None
        """In ``events`` mode, what tells the publisher and the webhooks of workflows' transitions."""
        if self.feed is not None and broker is not None:
            self.publisher = Publisher(broker=broker, prefix=prefix, metrics=self.metrics)
            self.announcer = Announcer(
                definition=definition,
                store=self.store,
                build=lambda workflow_id, parts: self._require_open().reads.build(workflow_id, parts),
                read=self.view,
                metrics=self.metrics,
                sinks=[self.publisher, self.webhooks],
            )
        elif definition.notify:
            raise DefinitionError(
                "webhooks are told of workflow events, which need freshness 'events'", field="notify"
            )
        self.watchers = Watchers(limit=settings.max_watchers, store=self.store, metrics=self.metrics)
        self._background = Background()
        self._opened: _Opened | None = None
        """Built on entry."""
        self._state: LifecycleState = "new"
        self._all_failing = False

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def state(self) -> LifecycleState:
        """``new`` until entered, ``open`` inside ``async with``, ``closed`` after."""
        return self._state

    @property
    def ready(self) -> bool:
        """Whether the aggregator is open and able to serve."""
        return self._state == "open"

    @property
    def degraded(self) -> str | None:
        """Why the configured freshness is not in force right now, if it is not."""
        return self.freshness.degraded

    @property
    def failing(self) -> list[str]:
        """The participants whose circuit is not closed (failing, or being probed)."""
        return self.health().failing

    def health(self) -> Health:
        """Readiness, each participant's circuit breaker, and why freshness is degraded (if it is)."""
        opened = self._opened
        upstreams = {} if opened is None else opened.upstreams
        breakers = {n: up.breaker_state for n, up in upstreams.items()}
        participants = {n: _participant_health(breakers[n], up.last_answer) for n, up in upstreams.items()}
        silent = self.feed.silent(after_s=SILENT_AFTER_S) if self.feed is not None else []
        return Health(
            ready=self.ready,
            breakers=breakers,
            degraded=self.degraded,
            silent=silent,
            participants=participants,
        )

    async def probe(self, *, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, str]:
        """Ask every participant something cheap, concurrently, each within ``timeout_s`` (and its
        own timeout); log a WARNING naming each one that could not be reached, and return
        ``{name: why}`` for them. ``/readyz`` then shows each as ``ok`` or ``unreachable``
        instead of ``unknown``; the breakers are left alone (reads decide them)."""
        upstreams = self._require_open().upstreams
        reasons = await asyncio.gather(*(up.probe(timeout_s=timeout_s) for up in upstreams.values()))
        unreachable = {name: why for name, why in zip(upstreams, reasons, strict=True) if why is not None}
        for name, why in unreachable.items():
            log.warning(
                "participant %s (%s) cannot be reached: %s; its part of every view is unavailable "
                "until it answers",
                name,
                self.definition.participants[name].url,
                why,
            )
        return unreachable

    def _breaker_changed(self) -> None:
        failing = self.failing
        all_failing = bool(failing) and len(failing) == len(self.definition.participants)
        if all_failing and not self._all_failing:
            log.warning("every participant is failing: views show only what is kept, or answer 503")
        self._all_failing = all_failing

    def _refresh(self, name: str, workflow_id: str) -> None:
        """An event asks for one part to be fetched (the feed runs only while the aggregator is open)."""
        if self._opened is not None:
            self._opened.reads.refresh(name, workflow_id)

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise AggregatorError(
                f"an Aggregator is entered once (this one is {self._state}); make a new one"
            )
        await self._background.open()
        owned: Transport | None = None
        try:
            transport: Transport
            if self._given is None:
                transport = owned = Http1Pool()
            else:
                transport = self._given
            self._opened = self._open(transport, owned)
            if self.feed is not None:
                self._background.spawn(self.feed.run(), name="aggregator-event-feed")
            if self.announcer is not None and self.publisher is not None:
                self._background.spawn(self.announcer.run(), name="aggregator-workflow-events")
                self._background.spawn(self.publisher.run(), name="aggregator-workflow-publisher")
                if self.webhooks.receivers:
                    self._background.spawn(self.webhooks.run(), name="aggregator-webhooks")
            # Reads call participants rarely in events mode: every clock is probed there; in the
            # other modes, only those the reads' answers show off (to place their times closely).
            probes = {name: up.client.date for name, up in self._opened.upstreams.items()}
            self._background.spawn(
                probe_clocks(self.clocks, probes, always=self.feed is not None),
                name="aggregator-clock-probes",
            )
            if self._redrive == "auto":
                self._background.spawn(self._opened.stalls.run(), name="aggregator-redrive")
        except BaseException:
            self._state = "closed"
            await self._close(owned)
            raise
        self._state = "open"
        return self

    def _open(self, transport: Transport, owned: Transport | None) -> _Opened:
        """One upstream per participant over ``transport``; reads and the stall scan over them."""
        upstreams = {
            name: Upstream(
                client_for(
                    name,
                    spec,
                    transport=transport,
                    max_bytes=self.settings.max_response_bytes,
                    token=self._outbound_tokens[name],
                    clocks=self.clocks,
                ),
                settings=self.settings,
                metrics=self.metrics,
                store=self.store,
                spawn=self._background.spawn,
                breaker_changed=self._breaker_changed,
            )
            for name, spec in self.definition.participants.items()
        }
        reads = Reads(
            definition=self.definition,
            store=self.store,
            freshness=self.freshness,
            upstreams=upstreams,
            metrics=self.metrics,
            known_at=self.feed.floor if self.feed is not None else None,
            offsets=self.clocks.corrections,
        )
        stalls = Stalls(
            definition=self.definition, upstreams=upstreams, views=self.views, metrics=self.metrics
        )
        fleet = Fleet(
            definition=self.definition,
            initiator=stalls.initiator,
            views=self.views,
            metrics=self.metrics,
            offsets=self.clocks.corrections,
        )
        jobs = Jobs(
            definition=self.definition,
            views=self.views,
            query=fleet.query,
            key=fleet.key,
            redrive=stalls.redrive,
            spawn=lambda coro: self._background.spawn(coro, name="aggregator-redrive-job"),
        )
        return _Opened(upstreams=upstreams, reads=reads, stalls=stalls, fleet=fleet, jobs=jobs, owned=owned)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._state = "closed"
        await self._close(self._opened.owned if self._opened is not None else None)

    async def _close(self, owned: Transport | None) -> None:
        try:
            await self._background.close()
        finally:
            if owned is not None:
                await owned.aclose()

    def _require_open(self) -> _Opened:
        opened = self._opened
        if self._state != "open" or opened is None:
            raise NotOpen(self._state)
        return opened

    # -- reads ---------------------------------------------------------------------------

    async def view(self, workflow_id: str, options: ReadOptions = ReadOptions()) -> View:
        """The reconstructed view of one workflow.

        Raises :class:`InvalidWorkflowId`, :class:`WorkflowNotFound` (every participant said it
        has no record), :class:`NoParticipantAnswered` (nothing answered, nothing kept) or
        :class:`NotOpen`.
        """
        return await self._require_open().reads.view(workflow_id, options)

    async def views(
        self, workflow_ids: Sequence[str], options: ReadOptions = ReadOptions()
    ) -> tuple[list[View], list[str]]:
        """Views of several workflows, asking each participant once through its batch endpoint.

        Returns the views found (in request order) and the ids no participant knows. Ids that
        nothing could be learnt about raise nothing here: they come back as views whose parts
        all carry errors.
        """
        return await self._require_open().reads.views(workflow_ids, options)

    async def timeline(self, workflow_id: str) -> TimelineBody:
        """Every participant's history of the workflow, merged: no entry before its cause, then by
        time corrected for the participants' clock offsets (asked live).

        Raises :class:`InvalidWorkflowId`, :class:`WorkflowNotFound`, :class:`NoParticipantAnswered`
        or :class:`NotOpen`; a participant that could not be asked is named in ``errors``.
        """
        upstreams = self._require_open().upstreams
        return await timeline(
            check_workflow_id(workflow_id),
            upstreams,
            deadline_s=self.settings.deadline_ms / 1000,
            offsets=self.clocks.corrections,
        )

    def check_listing(self) -> None:
        """Raise what a scan of the initiator's listing (stalled list, fleet query, summary) would
        raise before it asks anything: :class:`NotOpen`, :class:`NoInitiator`, or
        :class:`NotSupported` for a mapped initiator."""
        self._require_open()
        initiator = self.definition.initiator
        if initiator is None:
            raise NoInitiator
        if self.definition.participants[initiator].mapped:
            raise NotSupported(initiator, "listing of workflows")

    async def stalled(self, limit: int = 100) -> list[View]:
        """Workflows not in a terminal state whose newest part changed more than ``stall_after_ms``
        ago, found through the initiator's listing (:class:`NoInitiator` without one)."""
        return await self._require_open().stalls.find(limit)

    async def query(self, query: FleetQuery) -> FleetPage:
        """One page of the in-flight workflows a fleet query asks for, found through the
        initiator's listing and bounded by a scan budget (:mod:`aggregator._fleet`; raises
        :class:`NoInitiator`, :class:`NotSupported` for a mapped initiator, :class:`PartFailure`)."""
        return await self._require_open().fleet.query(query)

    async def summary(self, updated_after: float | None = None) -> Summary:
        """In-flight workflows counted by derived state, bounded, saying whether complete."""
        return await self._require_open().fleet.summary(updated_after)

    async def redrive(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """Ask every participant to republish the workflow's events (original ids); each one's answer."""
        return await self._require_open().stalls.redrive(check_workflow_id(workflow_id))

    @property
    def jobs(self) -> Jobs:
        """The redrive jobs (:mod:`aggregator._jobs`): started, followed and cancelled in memory."""
        return self._require_open().jobs

    async def watch(self, workflow_id: str, options: ReadOptions = ReadOptions()) -> AsyncIterator[View]:
        """Yield the view now (once the workflow exists), then a new view whenever it changes, in order.

        Changes come from events (``events`` mode) and from any read of the workflow; where no
        event feed is up, the workflow is also re-read every ``watch_poll_ms``. Raises
        :class:`TooManyWatchers` past ``max_watchers`` (on the first iteration).
        """
        async with self.watching(workflow_id, options) as views:
            async for view in views:
                yield view

    @contextlib.asynccontextmanager
    async def watching(
        self, workflow_id: str, options: ReadOptions = ReadOptions()
    ) -> AsyncIterator[AsyncIterator[View]]:
        """:meth:`watch` with the watcher's slot taken on entry (:class:`TooManyWatchers` there), freed on exit."""
        check_workflow_id(workflow_id)
        reads = self._require_open().reads
        with self.watchers.subscribe(workflow_id) as queue:
            views = watch_views(
                queue,
                read=lambda: self.view(workflow_id, options),
                rebuild=lambda parts: reads.build(workflow_id, parts),
                pushed=lambda: self.freshness.pushed,
                poll_s=self.settings.watch_poll_ms / 1000,
            )
            try:
                yield views
            finally:
                await views.aclose()
