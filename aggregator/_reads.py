"""Answering a read: what the freshness policy serves from the store, what is fetched, one deadline.

:class:`Reads` holds no state of its own: parts live in the
:class:`~aggregator._store.PartStore`, calls go through each participant's
:class:`~aggregator._fanout.Upstream`, and the policy decides between the two per part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence

from contract import is_valid_workflow_id, utc_now

from ._fanout import Upstream
from ._flight import DEADLINE_REACHED, Flight
from ._freshness import Freshness, Lookup
from ._stallwatch import StallWatch
from ._store import PartStore
from .definition import Definition
from .errors import BadReadOptions, InvalidWorkflowId, NoParticipantAnswered, PartFailure, WorkflowNotFound
from .metrics import Metrics
from .options import ReadOptions
from .view import Derivation, Part, View, build_view, missing_part

#: The longest pause between two reads of a part that has not reached a ``min_version`` yet.
_MIN_VERSION_POLL_S = 0.1


def check_workflow_id(workflow_id: str) -> str:
    """Return ``workflow_id`` if the contract accepts it, else raise :class:`InvalidWorkflowId`."""
    if not is_valid_workflow_id(workflow_id):
        raise InvalidWorkflowId(workflow_id)
    return workflow_id


class Reads:
    """Views of one workflow or of many, from the store and the participants."""

    def __init__(
        self,
        *,
        definition: Definition,
        store: PartStore,
        freshness: Freshness,
        upstreams: Mapping[str, Upstream],
        metrics: Metrics,
        known_at: Callable[[Part], float] | None = None,
        offsets: Mapping[str, float] | None = None,
    ) -> None:
        """``offsets``: the participants' clock corrections (:attr:`Clocks.corrections`, kept current there)."""
        self._known_at = known_at
        self._offsets = offsets
        self.definition = definition
        self.settings = definition.settings
        self.store = store
        self.freshness = freshness
        self._upstreams = upstreams
        self.metrics = metrics
        self._derivation = Derivation(definition)
        self._stalls = StallWatch(metrics)
        self._versioned = definition.versioned()
        self._misses = [(name, Lookup.MISS.value) for name in upstreams]
        """The cache lookup labels of a read that asks every participant."""

    async def view(self, workflow_id: str, options: ReadOptions = ReadOptions()) -> View:
        """The reconstructed view of one workflow.

        Raises :class:`InvalidWorkflowId`, :class:`WorkflowNotFound` (every participant said it
        has no record) or :class:`NoParticipantAnswered` (nothing answered, nothing kept).
        """
        check_workflow_id(workflow_id)
        started = time.perf_counter()
        until = self._deadline(options)
        min_versions = options.min_versions or {}
        if min_versions and not self._versioned.issuperset(min_versions):
            unversioned = sorted(set(min_versions) - self._versioned)
            raise BadReadOptions(f"min_version names {unversioned}, whose parts carry no version")
        known: dict[str, Part] = {}
        wanted: list[str] = []
        # Parts served from the store need no task: only the rest are fetched, concurrently.
        if self.freshness.may_serve(options):
            now = time.monotonic()
            for name in self._upstreams:
                kept = self._from_store(name, workflow_id, options, min_versions.get(name), now)
                if kept is None:
                    wanted.append(name)
                else:
                    known[name] = kept
        else:  # the policy would answer MISS for every part: no need to look
            wanted = list(self._upstreams)
            self.metrics.cache.inc_each(self._misses)
        if not known:  # every part fetched: in the definition's order already
            parts = await self._fetch_all(workflow_id, wanted, until, min_versions)
        else:
            if wanted:
                known.update(await self._fetch_all(workflow_id, wanted, until, min_versions))
            parts = {name: known[name] for name in self._upstreams}
        view = self._assemble(workflow_id, parts, min_versions)
        self.metrics.view_latency.observe(time.perf_counter() - started)
        return view

    async def views(
        self, workflow_ids: Sequence[str], options: ReadOptions = ReadOptions()
    ) -> tuple[list[View], list[str]]:
        """The views behind :meth:`Aggregator.views`: one batch call per participant."""
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
                views.append(self.build(workflow_id, parts))
        return views, not_found

    def _deadline(self, options: ReadOptions) -> float:
        budget_ms = self.settings.deadline_ms
        if options.timeout_ms is not None:
            budget_ms = min(budget_ms, max(1, options.timeout_ms))
        return asyncio.get_running_loop().time() + budget_ms / 1000

    def build(
        self, workflow_id: str, parts: dict[str, Part], min_versions: Mapping[str, int] | None = None
    ) -> View:
        view = build_view(
            self.definition,
            workflow_id,
            parts,
            generated_at=utc_now(),
            min_versions=min_versions,
            known_at=self._known_at,
            derivation=self._derivation,
            offsets=self._offsets,
        )
        self._stalls.saw(view)
        return view

    def _assemble(
        self, workflow_id: str, parts: dict[str, Part], min_versions: Mapping[str, int] | None = None
    ) -> View:
        no_record = True  # every participant answered that it has no record
        answered = False
        for p in parts.values():
            if p.source == "none":
                no_record = False
            else:
                answered = True
                if p.state is not None or p.error is not None:
                    no_record = False
        if no_record:
            raise WorkflowNotFound(workflow_id)
        if not answered:
            raise NoParticipantAnswered(workflow_id, {n: str(p.error) for n, p in parts.items()})
        return self.build(workflow_id, parts, min_versions)

    def _from_store(
        self, name: str, workflow_id: str, options: ReadOptions, min_version: int | None, now: float
    ) -> Part | None:
        """The kept part if the freshness policy lets it be served at ``now``, else None (ask the participant)."""
        kept = self.store.get(name, workflow_id)
        if kept is not None and min_version is not None and kept.version < min_version:
            kept = None
        lookup = self.freshness.lookup(kept, options, now)
        self.metrics.lookup(name, lookup)
        if kept is None or not lookup.serves:
            return None
        if lookup is Lookup.STALE_WHILE_REVALIDATE:
            self.refresh(name, workflow_id)
        served = kept.served_as("event" if kept.source == "event" else "cache")
        if served is not kept:
            self.store.relabel(workflow_id, kept, served)  # the next hit needs no copy
        return served

    def refresh(self, name: str, workflow_id: str) -> None:
        """Fetch one part in the background (a known participant's; nothing if a call is in flight)."""
        upstream = self._upstreams.get(name)
        if upstream is not None:
            upstream.refresh(workflow_id)

    async def _fetch_all(
        self, workflow_id: str, names: list[str], until: float, min_versions: Mapping[str, int]
    ) -> dict[str, Part]:
        """Ask these participants at once; no task per part, one wait bounded by the deadline."""
        if min_versions and any(name in min_versions for name in names):
            fetched = await asyncio.gather(
                *(self._fetch(name, workflow_id, until, min_versions.get(name)) for name in names)
            )
            return dict(zip(names, fetched, strict=True))
        flights = {name: self._upstreams[name].flight(workflow_id) for name in names}
        pending = [f for f in flights.values() if not f.done()]
        if pending:
            await _landed(pending, until)
        parts = {}
        for name, flight in flights.items():
            landed = flight.result() if flight.done() else DEADLINE_REACHED
            if isinstance(landed, Part):  # the common case, as outcome() would give it
                parts[name] = landed
                continue
            result = self._upstreams[name].outcome(workflow_id, landed)
            parts[name] = (
                self._fallback(name, workflow_id, result) if isinstance(result, PartFailure) else result
            )
        return parts

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
        detail = failure.detail if failure.answered else None  # what a mapped answer lacked
        if kept is not None and self.freshness.stale_if_error(kept, time.monotonic()):
            return kept.served_as("stale", error=failure.kind, detail=detail)
        return missing_part(name, failure.kind, detail=detail)

    async def _batch(self, name: str, ids: list[str], options: ReadOptions, until: float) -> dict[str, Part]:
        parts: dict[str, Part] = {}
        wanted = []
        now = time.monotonic()  # one instant for the whole read, as for a single view
        may_serve = self.freshness.may_serve(options)
        for workflow_id in ids:
            kept = self._from_store(name, workflow_id, options, None, now) if may_serve else None
            if kept is not None:
                parts[workflow_id] = kept
            else:
                wanted.append(workflow_id)
                if not may_serve:
                    self.metrics.lookup(name, Lookup.MISS)
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


def _landed(flights: list[Flight], until: float) -> asyncio.Future[None]:
    """A future done once every one of ``flights`` has landed, or at loop time ``until``.

    What :func:`asyncio.wait` does, without its sets or a coroutine: one waiter, one timer, one
    callback per flight; a flight is never cancelled by its readers (others may share it).
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(flights)

    def one_landed(_: Flight) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            timer.cancel()
            if not waiter.done():  # cancelled: its reader gave up
                waiter.set_result(None)

    def deadline() -> None:
        for flight in flights:
            flight.remove_done_callback(one_landed)
        if not waiter.done():
            waiter.set_result(None)

    def reader_gone(_: asyncio.Future[None]) -> None:
        if waiter.cancelled():  # its reader gave up (a client that left): leave nothing behind
            timer.cancel()
            for flight in flights:
                flight.remove_done_callback(one_landed)

    timer = loop.call_at(until, deadline)
    for flight in flights:
        flight.add_done_callback(one_landed)
    waiter.add_done_callback(reader_gone)
    return waiter
