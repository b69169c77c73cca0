"""The :class:`Aggregator`: reconstructs workflow views on demand from their participants.

``async with Aggregator(definition) as agg: view = await agg.view("ord-42")``. Every read asks
the participants concurrently (or serves a part from memory when the freshness policy allows),
within one deadline, and returns what arrived: a part that failed carries its error, and only
when nothing at all is known does a read fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self

import aiohttp

from participants.config import BrokerURL
from participants.events import is_valid_workflow_id, utc_now
from participants.tasks import cancel_and_wait

from ._cache import PartCache
from ._client import ParticipantClient
from ._events import EventFeed
from ._fanout import Upstream
from ._watch import Watchers, watch_views
from .definition import Definition
from .errors import (
    DefinitionError,
    InvalidWorkflowId,
    NoParticipantAnswered,
    PartFailure,
    WorkflowNotFound,
)
from .metrics import Metrics
from .view import Part, Source, View, build_view, missing_part

#: Most ids one batch read may name.
MAX_BATCH = 100


def check_workflow_id(workflow_id: str) -> str:
    """Return ``workflow_id`` if it matches ``[A-Za-z0-9._:-]{1,128}``, else raise :class:`InvalidWorkflowId`."""
    if not is_valid_workflow_id(workflow_id):
        raise InvalidWorkflowId(workflow_id)
    return workflow_id


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOptions:
    """How fresh a read must be (from ``Cache-Control``, ``min_version`` and ``timeout_ms``)."""

    max_age_s: float | None = None
    """Serve parts from memory up to this age (``Cache-Control: max-age``)."""
    no_cache: bool = False
    """Ask every participant (``Cache-Control: no-cache``)."""
    min_versions: Mapping[str, int] | None = None
    """Wait, within the deadline, until these parts reach these versions (read-your-writes)."""
    timeout_ms: int | None = None
    """Shorten the deadline of this read (never lengthens the configured one)."""


class Aggregator:
    """Reconstructs workflow views from the participants named in a :class:`Definition`.

    An async context manager: on entry it opens one pooled ``ClientSession`` (unless one is
    injected with ``session=``) and, in ``events`` mode, subscribes to ``broker``; on exit it
    cancels its background tasks and closes what it opened.
    """

    def __init__(
        self,
        definition: Definition,
        *,
        session: aiohttp.ClientSession | None = None,
        broker: BrokerURL | None = None,
        prefix: str = "saga",
    ) -> None:
        self.definition = definition
        self.settings = definition.settings
        if self.settings.freshness == "events" and broker is None:
            raise DefinitionError(
                "freshness 'events' needs a broker to subscribe to", field="settings.freshness"
            )
        self.metrics = Metrics()
        self.cache = PartCache(self.settings.cache_size)
        self.feed: EventFeed | None = None
        if self.settings.freshness == "events" and broker is not None:
            self.feed = EventFeed(
                broker=broker,
                prefix=prefix,
                participants=frozenset(definition.participants),
                apply=self._apply_event,
                metrics=self.metrics,
            )
        self._session = session
        self._own_session = session is None
        self._upstreams: dict[str, Upstream] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._refreshing: set[tuple[str, str]] = set()
        self.watchers = Watchers(limit=self.settings.max_watchers, metrics=self.metrics)
        self._stack = contextlib.AsyncExitStack()
        self._feed_task: asyncio.Task[None] | None = None
        self._open = False

    @property
    def ready(self) -> bool:
        """Whether the aggregator is open and able to serve."""
        return self._open

    @property
    def degraded(self) -> str | None:
        """Why the configured freshness is not in force right now, if it is not."""
        if self.feed is not None and not self.feed.healthy:
            return "event feed down: serving with ttl freshness until the broker is back"
        return None

    @property
    def upstreams(self) -> Mapping[str, Upstream]:
        """Per participant: client, breaker, latency window."""
        return self._upstreams

    async def __aenter__(self) -> Self:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector)
        for name, spec in self.definition.participants.items():
            client = ParticipantClient(
                name, spec, session=self._session, max_bytes=self.settings.max_response_bytes
            )
            self._upstreams[name] = Upstream(client, settings=self.settings, metrics=self.metrics)
        if self.feed is not None:
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._feed_task = tasks.create_task(self.feed.run(), name="aggregator-event-feed")
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False
        if self._feed_task is not None:
            await cancel_and_wait(self._feed_task)
        await self._stack.aclose()
        for task in list(self._background):
            await cancel_and_wait(task)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- reads ---------------------------------------------------------------------------

    async def view(self, workflow_id: str, options: ReadOptions = ReadOptions()) -> View:
        """The reconstructed view of one workflow.

        Raises :class:`InvalidWorkflowId`, :class:`WorkflowNotFound` (every participant said it
        has no record) or :class:`NoParticipantAnswered` (nothing answered, nothing cached).
        """
        check_workflow_id(workflow_id)
        started = time.perf_counter()
        until = self._deadline(options)
        min_versions = options.min_versions or {}
        known: dict[str, Part] = {}
        wanted: list[str] = []
        # Parts served from memory need no task: only the rest are fetched, concurrently.
        for name in self._upstreams:
            remembered = self._from_memory(name, workflow_id, options, min_versions.get(name))
            if remembered is None:
                wanted.append(name)
            else:
                known[name] = remembered
        if wanted:
            fetched = await asyncio.gather(
                *(self._fetch_part(name, workflow_id, until, min_versions.get(name)) for name in wanted)
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
                views.append(build_view(self.definition, workflow_id, parts, generated_at=utc_now()))
        return views, not_found

    def _deadline(self, options: ReadOptions) -> float:
        budget_ms = self.settings.deadline_ms
        if options.timeout_ms is not None:
            budget_ms = min(budget_ms, max(1, options.timeout_ms))
        return asyncio.get_running_loop().time() + budget_ms / 1000

    def _assemble(self, workflow_id: str, parts: dict[str, Part]) -> View:
        if all(p.answered and p.state is None and p.error is None for p in parts.values()):
            raise WorkflowNotFound(workflow_id)
        if not any(p.answered for p in parts.values()):
            raise NoParticipantAnswered(workflow_id, {n: str(p.error) for n, p in parts.items()})
        return build_view(self.definition, workflow_id, parts, generated_at=utc_now())

    def _fresh_limit(self, options: ReadOptions) -> float | None:
        """How old a remembered part may be and still be served, or None to always ask."""
        if options.no_cache:
            return None
        if options.max_age_s is not None:
            return options.max_age_s
        if self.settings.freshness == "on-demand":
            return None
        return self.settings.ttl_ms / 1000

    def _from_memory(
        self, name: str, workflow_id: str, options: ReadOptions, min_version: int | None
    ) -> Part | None:
        cached = self.cache.get(name, workflow_id)
        if cached is not None and (min_version is None or cached.version >= min_version):
            source: Source = "event" if cached.source == "event" else "cache"
            # Events mode with the feed up: a part confirmed since the subscription came up
            # cannot have missed a change (it would have arrived as an event), whatever its age.
            feed = self.feed
            trusted = feed is not None and feed.healthy and cached.observed >= feed.epoch
            if trusted and not options.no_cache and options.max_age_s is None:
                self.metrics.lookup(name, "hit")
                return cached.served_as(source)
        limit = self._fresh_limit(options)
        if cached is None or limit is None or (min_version is not None and cached.version < min_version):
            self.metrics.lookup(name, "miss")
            return None
        if self.feed is not None and self.feed.healthy and cached.observed < self.feed.epoch:
            self.metrics.lookup(name, "revalidate")
            return None  # confirmed before the last outage: may have missed events
        age = time.monotonic() - cached.observed
        if age <= limit:
            self.metrics.lookup(name, "hit")
            return cached.served_as(source)
        implicit = options.max_age_s is None and self.settings.freshness != "on-demand"
        if implicit and age <= limit + self.settings.stale_while_revalidate_ms / 1000:
            self.metrics.lookup(name, "stale_while_revalidate")
            self._revalidate(name, workflow_id)
            return cached.served_as(source)
        self.metrics.lookup(name, "miss")
        return None

    async def _fetch_part(self, name: str, workflow_id: str, until: float, min_version: int | None) -> Part:
        loop = asyncio.get_running_loop()
        pause = 0.01
        best: Part | None = None
        while True:
            try:
                fetched = await self._upstreams[name].get(workflow_id, until=until)
            except PartFailure as failure:
                # Waiting for min_version ran into the deadline: serve the newest answer we got.
                return best if best is not None else self._fallback(name, workflow_id, failure)
            served = self._offer(workflow_id, fetched)
            best = served.served_as("live" if served is fetched else "cache")
            remaining = until - loop.time()
            if min_version is None or served.version >= min_version or remaining <= 0:
                return best
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)

    def _fallback(self, name: str, workflow_id: str, failure: PartFailure) -> Part:
        """Stale-if-error (cache modes only): the last known part within its bound, else a missing part."""
        cached = self.cache.get(name, workflow_id)
        bound = (self.settings.ttl_ms + self.settings.stale_if_error_ms) / 1000
        caching = self.settings.freshness != "on-demand"
        if caching and cached is not None and cached.answered and time.monotonic() - cached.observed <= bound:
            return cached.served_as("stale", error=failure.kind)
        return missing_part(name, failure.kind)

    def _revalidate(self, name: str, workflow_id: str) -> None:
        """Refresh one part in the background; at most one refresh per part at a time."""
        key = (name, workflow_id)
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def refresh() -> None:
            until = asyncio.get_running_loop().time() + self._upstreams[name].client.spec.timeout_ms / 1000
            try:
                self._offer(workflow_id, await self._upstreams[name].get(workflow_id, until=until))
            except PartFailure:
                pass  # the next read tries again, or serves stale-if-error
            finally:
                self._refreshing.discard(key)

        task = asyncio.create_task(refresh(), name=f"revalidate-{name}-{workflow_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _batch(self, name: str, ids: list[str], options: ReadOptions, until: float) -> dict[str, Part]:
        parts: dict[str, Part] = {}
        wanted = []
        for workflow_id in ids:
            remembered = self._from_memory(name, workflow_id, options, None)
            if remembered is not None:
                parts[workflow_id] = remembered
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
        for workflow_id, part in fetched.items():
            served = self._offer(workflow_id, part)
            parts[workflow_id] = served.served_as("live" if served is part else "cache")
        return parts

    # -- change tracking, events and watchers ----------------------------------------------

    def _offer(self, workflow_id: str, part: Part) -> Part:
        """Merge a part into the cache; tell the workflow's watchers when it changed."""
        before = self.cache.get(part.participant, workflow_id)
        served = self.cache.offer(workflow_id, part)
        changed = before is None or (before.version, before.state) != (served.version, served.state)
        if served is part and changed:
            self.watchers.notify(workflow_id, part)
        return served

    def _apply_event(self, workflow_id: str, part: Part) -> None:
        """Apply one event's carried state: monotonic, with a fetch when versions were skipped."""
        if part.participant not in self._upstreams:
            self.metrics.events.labels("ignored").inc()
            return
        cached = self.cache.get(part.participant, workflow_id)
        known = cached.version if cached else 0
        if part.version <= known:
            self.metrics.events.labels("old").inc()
            return
        if part.version == known + 1:
            part = replace(part, history=(*(cached.history if cached else ()), part.state or ""))
            self.metrics.events.labels("applied").inc()
        else:
            # A gap: versions were missed (or the part is unknown past its first version). The
            # event's state is still the newest known; a fetch brings the history.
            self.metrics.events.labels("gap").inc()
            self._revalidate(part.participant, workflow_id)
        self._offer(workflow_id, part)

    def watch(self, workflow_id: str, options: ReadOptions = ReadOptions()) -> AsyncIterator[View]:
        """Yield the view now, then a new view whenever it changes, in order.

        Changes come from events (``events`` mode) and from any read of the workflow; where no
        event feed is up, the workflow is also re-read every ``watch_poll_ms``. Raises
        :class:`TooManyWatchers` past ``max_watchers`` (on the first iteration).
        """
        check_workflow_id(workflow_id)
        return watch_views(self, workflow_id, options)
