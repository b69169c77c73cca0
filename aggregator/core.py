"""The :class:`Aggregator`: reconstructs workflow views on demand from their participants.

``async with Aggregator(definition) as agg: view = await agg.view("ord-42")``. It is a
composition of small pieces (docs/design.md, "Architecture"):

* a :class:`~aggregator._store.PartStore`, the one place parts are kept, merged monotonically
  and listened to;
* a freshness policy (:mod:`aggregator._freshness`) that says when a kept part may be served;
* one :class:`~aggregator._fanout.Upstream` per participant (single flight, breaker, hedging),
  whose answers land in the store;
* in ``events`` mode, an :class:`~aggregator._events.EventFeed` whose events land there too;
* :class:`~aggregator._background.Background`, which owns every task those pieces start.

A read serves what the policy allows from the store, asks the participants for the rest
concurrently within one deadline, and returns what arrived: a part that failed carries its
error, and only when nothing at all is known does a read fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Literal, Self

import aiohttp

from contract import BrokerURL, ContractError, is_valid_workflow_id, utc_now

from ._background import Background
from ._client import ParticipantClient
from ._events import EventFeed
from ._fanout import Upstream
from ._freshness import Freshness, Lookup, policy_for
from ._store import PartStore
from ._watch import Watchers, watch_views
from .definition import Definition
from .errors import (
    AggregatorError,
    ConfigError,
    DefinitionError,
    InvalidWorkflowId,
    NoParticipantAnswered,
    NotOpen,
    PartFailure,
    WorkflowNotFound,
)
from .metrics import Metrics
from .options import ReadOptions
from .view import Part, View, build_view, missing_part

#: Most ids one batch read may name.
MAX_BATCH = 100
#: The longest pause between two reads of a part that has not reached a ``min_version`` yet.
_MIN_VERSION_POLL_S = 0.1

LifecycleState = Literal["new", "open", "closed"]


def check_workflow_id(workflow_id: str) -> str:
    """Return ``workflow_id`` if it matches ``[A-Za-z0-9._:-]{1,128}``, else raise :class:`InvalidWorkflowId`."""
    if not is_valid_workflow_id(workflow_id):
        raise InvalidWorkflowId(workflow_id)
    return workflow_id


class Aggregator:
    """Reconstructs workflow views from the participants named in a :class:`Definition`.

    An async context manager, entered once: on entry it opens one pooled ``ClientSession``
    (unless one is injected with ``session=``) and, in ``events`` mode, subscribes to
    ``broker``; on exit it cancels every background task and closes what it opened. Reading
    before entry or after exit raises :class:`NotOpen`.
    """

    def __init__(
        self,
        definition: Definition,
        *,
        session: aiohttp.ClientSession | None = None,
        broker: BrokerURL | str | None = None,
        prefix: str = "saga",
    ) -> None:
        self.definition = definition
        self.settings = settings = definition.settings
        if isinstance(broker, str):
            try:
                broker = BrokerURL.parse(broker)
            except ContractError as exc:
                raise ConfigError(str(exc)) from exc
        if settings.freshness == "events" and broker is None:
            raise DefinitionError(
                "freshness 'events' needs a broker to subscribe to", field="settings.freshness"
            )
        self.metrics = Metrics()
        self.store = PartStore(settings.cache_size)
        self._background = Background()
        self._session = session
        self._own_session = session is None
        self._upstreams: dict[str, Upstream] = {}
        self.feed: EventFeed | None = None
        if settings.freshness == "events" and broker is not None:
            self.feed = EventFeed(
                broker=broker,
                prefix=prefix,
                participants=frozenset(definition.participants),
                store=self.store,
                refresh=self._refresh,
                metrics=self.metrics,
            )
        self.freshness: Freshness = policy_for(settings, self.feed)
        self.watchers = Watchers(limit=settings.max_watchers, store=self.store, metrics=self.metrics)
        self._state: LifecycleState = "new"

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
    def upstreams(self) -> dict[str, Upstream]:
        """Per participant: client, breaker, latency window."""
        return self._upstreams

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise AggregatorError(
                f"an Aggregator is entered once (this one is {self._state}); make a new one"
            )
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector)
        await self._background.open()
        for name, spec in self.definition.participants.items():
            client = ParticipantClient(
                name, spec, session=self._session, max_bytes=self.settings.max_response_bytes
            )
            self._upstreams[name] = Upstream(
                client,
                settings=self.settings,
                metrics=self.metrics,
                store=self.store,
                spawn=lambda coro, task_name: self._background.spawn(coro, name=task_name),
            )
        if self.feed is not None:
            self._background.spawn(self.feed.run(), name="aggregator-event-feed")
        self._state = "open"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._state = "closed"
        try:
            await self._background.close()
        finally:
            if self._own_session and self._session is not None:
                await self._session.close()
                self._session = None

    def _require_open(self) -> None:
        if self._state != "open":
            raise NotOpen(self._state)

    # -- reads ---------------------------------------------------------------------------

    async def view(self, workflow_id: str, options: ReadOptions = ReadOptions()) -> View:
        """The reconstructed view of one workflow.

        Raises :class:`InvalidWorkflowId`, :class:`WorkflowNotFound` (every participant said it
        has no record), :class:`NoParticipantAnswered` (nothing answered, nothing kept) or
        :class:`NotOpen`.
        """
        check_workflow_id(workflow_id)
        self._require_open()
        started = time.perf_counter()
        until = self._deadline(options)
        min_versions = options.min_versions or {}
        known: dict[str, Part] = {}
        wanted: list[str] = []
        # Parts served from the store need no task: only the rest are fetched, concurrently.
        for name in self._upstreams:
            kept = self._from_store(name, workflow_id, options, min_versions.get(name))
            if kept is None:
                wanted.append(name)
            else:
                known[name] = kept
        if wanted:
            fetched = await asyncio.gather(
                *(self._fetch(name, workflow_id, until, min_versions.get(name)) for name in wanted)
            )
            known.update(zip(wanted, fetched, strict=True))
        view = self._assemble(workflow_id, {name: known[name] for name in self._upstreams})
        self.metrics.view_latency.observe(time.perf_counter() - started)
        return view

    async def views(
        self, workflow_ids: Sequence[str], options: ReadOptions = ReadOptions()
    ) -> tuple[list[View], list[str]]:
        """Views of several workflows, asking each participant once through its batch endpoint.

        Returns the views found (in request order) and the ids no participant knows. Ids that
        nothing could be learnt about raise nothing here: they come back as views whose parts
        all carry errors.
        """
        ids = list(dict.fromkeys(check_workflow_id(w) for w in workflow_ids))
        self._require_open()
        until = self._deadline(options)
        per_participant = await asyncio.gather(
            *(self._batch(name, ids, options, until) for name in self._upstreams)
        )
        views, not_found = [], []
        for workflow_id in ids:
            parts = {
                name: got[workflow_id] for name, got in zip(self._upstreams, per_participant, strict=True)
            }
            try:
                views.append(self._assemble(workflow_id, parts))
            except WorkflowNotFound:
                not_found.append(workflow_id)
            except NoParticipantAnswered:
                views.append(self._build(workflow_id, parts))
        return views, not_found

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
        self._require_open()
        with self.watchers.subscribe(workflow_id) as queue:
            views = watch_views(
                queue,
                read=lambda: self.view(workflow_id, options),
                rebuild=lambda parts: self._build(workflow_id, parts),
                pushed=lambda: self.freshness.pushed,
                poll_s=self.settings.watch_poll_ms / 1000,
            )
            try:
                yield views
            finally:
                await views.aclose()

    # -- the pieces of a read ----------------------------------------------------------------

    def _deadline(self, options: ReadOptions) -> float:
        budget_ms = self.settings.deadline_ms
        if options.timeout_ms is not None:
            budget_ms = min(budget_ms, max(1, options.timeout_ms))
        return asyncio.get_running_loop().time() + budget_ms / 1000

    def _build(self, workflow_id: str, parts: dict[str, Part]) -> View:
        return build_view(self.definition, workflow_id, parts, generated_at=utc_now())

    def _assemble(self, workflow_id: str, parts: dict[str, Part]) -> View:
        if all(p.answered and p.state is None and p.error is None for p in parts.values()):
            raise WorkflowNotFound(workflow_id)
        if not any(p.answered for p in parts.values()):
            raise NoParticipantAnswered(workflow_id, {n: str(p.error) for n, p in parts.items()})
        return self._build(workflow_id, parts)

    def _from_store(
        self, name: str, workflow_id: str, options: ReadOptions, min_version: int | None
    ) -> Part | None:
        """The kept part if the freshness policy lets it be served now, else None (ask the participant)."""
        kept = self.store.get(name, workflow_id)
        if kept is not None and min_version is not None and kept.version < min_version:
            kept = None
        lookup = self.freshness.lookup(kept, options, time.monotonic())
        self.metrics.lookup(name, lookup)
        if kept is None or not lookup.serves:
            return None
        if lookup is Lookup.STALE_WHILE_REVALIDATE:
            self._refresh(name, workflow_id)
        return kept.served_as("event" if kept.source == "event" else "cache")

    def _refresh(self, name: str, workflow_id: str) -> None:
        upstream = self._upstreams.get(name)
        if upstream is not None and self._state == "open":
            upstream.refresh(workflow_id)

    async def _fetch(self, name: str, workflow_id: str, until: float, min_version: int | None) -> Part:
        """Ask one participant; with ``min_version``, keep asking (and listening) until it is reached."""
        upstream = self._upstreams[name]
        try:
            part = await upstream.get(workflow_id, until=until)
        except PartFailure as failure:
            return self._fallback(name, workflow_id, failure)
        loop = asyncio.get_running_loop()
        pause = 0.01
        while min_version is not None and part.version < min_version and loop.time() < until:
            # Wait for the store to learn the version (an event, another read), then ask again.
            wait = min(pause, until - loop.time())
            reached = await self.store.reach(name, workflow_id, min_version, timeout=wait)
            if reached is not None:
                return reached
            pause = min(pause * 2, _MIN_VERSION_POLL_S)
            with contextlib.suppress(PartFailure):  # at the deadline: the newest answer we got
                part = await upstream.get(workflow_id, until=until)
        return part

    def _fallback(self, name: str, workflow_id: str, failure: PartFailure) -> Part:
        """Stale-if-error where the policy allows it: the last known part, else a missing part."""
        kept = self.store.get(name, workflow_id)
        if kept is not None and self.freshness.stale_if_error(kept, time.monotonic()):
            return kept.served_as("stale", error=failure.kind)
        return missing_part(name, failure.kind)

    async def _batch(self, name: str, ids: list[str], options: ReadOptions, until: float) -> dict[str, Part]:
        parts: dict[str, Part] = {}
        wanted = []
        for workflow_id in ids:
            kept = self._from_store(name, workflow_id, options, None)
            if kept is not None:
                parts[workflow_id] = kept
            else:
                wanted.append(workflow_id)
        if not wanted:
            return parts
        remaining = max(0.0, until - asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(remaining):
                fetched = await self._upstreams[name].get_many(wanted)
        except TimeoutError:
            failure = PartFailure("timeout", "request deadline reached", participant=name)
            return parts | {w: self._fallback(name, w, failure) for w in wanted}
        except PartFailure as failure:
            return parts | {w: self._fallback(name, w, failure) for w in wanted}
        return parts | fetched
