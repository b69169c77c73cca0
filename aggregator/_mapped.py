"""Calls to a participant read through a mapping: its own REST API, read into parts by a :class:`Mapper`.

The same transport, guard, single flight, batching and hedging as a contract participant: only
what is asked and how the answer is read differ. A workflow id is validated and URL-quoted
into the template, so nothing in a request can point the aggregator elsewhere. An answer that
does not map is a :class:`~aggregator.errors.PartFailure` with ``answered`` set (the view shows
its ``detail``; the participant's circuit stays closed: it answered).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from contract import ListingBody, utc_now

from ._client import ParticipantClient, Transition, _quoted
from ._clocks import Clocks
from ._mapper import Mapped, Mapper, MappingProblem, Values, order_key, parse_json
from ._transport import Transport
from .definition import ParticipantDef
from .errors import NotSupported, PartFailure
from .view import Part

#: Without a batch mapping, :meth:`MappedClient.fetch_many` asks this many single calls at once.
_SINGLES_AT_ONCE = 8
#: Statuses that are an answer (their body is read); any other 2xx is too.
_ANSWERS = range(200, 300)


class MappedClient(ParticipantClient):
    """A participant's own API, read through its mapping (see the module docstring)."""

    def __init__(
        self,
        name: str,
        spec: ParticipantDef,
        *,
        transport: Transport,
        max_bytes: int,
        token: str | None = None,
        clocks: Clocks | None = None,
    ) -> None:
        super().__init__(name, spec, transport=transport, max_bytes=max_bytes, token=token, clocks=clocks)
        self.mapper = mapper = Mapper(spec)
        self.order = mapper.order
        status = mapper.status
        self._headers.update(status.request_headers(f"participants.{name}.status"))
        self._not_found = frozenset(status.not_found)
        self._ok = self._not_found.union(_ANSWERS)
        """The statuses a mapped call reads: 2xx and the mapping's ``not_found`` (a set: looked up on every call)."""
        self.batch_chunk = spec.batch.max_ids if spec.batch is not None else 1

    def request_path(self, workflow_id: str) -> str:
        """The path asked for one workflow's part."""
        return self.mapper.status.path.replace("{id}", _quoted(workflow_id))

    def batch_path(self, workflow_ids: list[str]) -> str:
        """The path asked for several workflows' parts (the mapping has a ``batch``)."""
        batch = self.mapper.batch
        assert batch is not None
        return batch.path.replace("{ids}", batch.join.join([_quoted(w) for w in workflow_ids]))

    async def fetch(self, workflow_id: str) -> Part:
        """This participant's part of ``workflow_id`` (state None if it has no record)."""
        observed, observed_at = time.monotonic(), utc_now()
        status, body = await self._get(self.request_path(workflow_id), workflow_id, self._ok)
        latency_ms = (time.monotonic() - observed) * 1000
        if status in self._not_found:
            return self._no_record(observed, observed_at, latency_ms)
        mapper = self.mapper
        try:
            record = mapper.record(parse_json(body))
            if record is None:
                return self._no_record(observed, observed_at, latency_ms)
            values = mapper.values(record, size=len(body))
        except MappingProblem as problem:
            raise self._unmapped(problem, workflow_id) from None
        return self.part(values, observed, observed_at, latency_ms)

    async def fetch_many(self, workflow_ids: list[str]) -> dict[str, Part]:
        """Parts of several workflows: through the batch mapping, else single calls a few at a time.

        Without a batch mapping, a record that does not map fails the whole call, as a batch
        answer that does not map does.
        """
        if self.mapper.batch is None:
            gate = asyncio.Semaphore(_SINGLES_AT_ONCE)

            async def one(workflow_id: str) -> Part:
                async with gate:
                    return await self.fetch(workflow_id)

            parts = await asyncio.gather(*(one(w) for w in workflow_ids))
            return dict(zip(workflow_ids, parts, strict=True))
        found: dict[str, Part] = {}
        chunk = self.batch_chunk
        for start in range(0, len(workflow_ids), chunk):
            found.update(await self._batch(workflow_ids[start : start + chunk]))
        return found

    async def _batch(self, workflow_ids: list[str]) -> dict[str, Part]:
        observed, observed_at = time.monotonic(), utc_now()
        status, body = await self._get(self.batch_path(workflow_ids), None, self._ok)
        latency_ms = (time.monotonic() - observed) * 1000
        parts: dict[str, Part] = {}
        if status not in self._not_found:
            try:
                found = self.mapper.batch_values(parse_json(body), set(workflow_ids), size=len(body))
            except MappingProblem as problem:
                raise self._unmapped(problem, None) from None
            make = self.part
            for workflow_id, values in found.items():
                parts[workflow_id] = make(values, observed, observed_at, latency_ms)
        for workflow_id in workflow_ids:
            if workflow_id not in parts:
                parts[workflow_id] = self._no_record(observed, observed_at, latency_ms)
        return parts

    def read_batch(self, doc: Any, wanted: set[str], *, size: int | None = None) -> dict[str, Mapped]:
        """The records of a batch answer for the ``wanted`` ids (the first record of each id)."""
        found = self.mapper.batch_values(doc, wanted, size=size)
        return {workflow_id: Mapped(*values) for workflow_id, values in found.items()}

    def part(self, values: Values, observed: float, observed_at: str, latency_ms: float | None) -> Part:
        """A live part from a record's values (:meth:`Mapper.values`)."""
        state, version, updated_at, epoch, data, _ = values
        order = self.order
        return Part(
            self.name,
            state,
            order_key(order, version, epoch),
            updated_at,
            observed,
            observed_at,
            "live",
            latency_ms,
            None,
            (state,),  # the one state known: a mapped answer has no history
            None,
            order,
            None,
            data,
        )

    def _no_record(self, observed: float, observed_at: str, latency_ms: float) -> Part:
        return Part(self.name, None, 0, None, observed, observed_at, "live", latency_ms, order=self.order)

    def _unmapped(self, problem: MappingProblem, workflow_id: str | None) -> PartFailure:
        return PartFailure(
            problem.kind, problem.detail, participant=self.name, workflow_id=workflow_id, answered=True
        )

    async def history(self, workflow_id: str) -> tuple[Transition, ...] | None:
        """The part's current state as its one known transition (a mapping reads no history)."""
        part = await self.fetch(workflow_id)
        if part.state is None:
            return None
        return (
            _Entry(
                part.state,
                part.version if part.order == "version" else None,
                part.updated_at or part.observed_at,
            ),
        )

    async def listing(
        self, *, states: list[str] | None, updated_before: str, limit: int, after: str | None = None
    ) -> ListingBody:
        """Not there: a mapping reads one workflow (or a batch), not a listing."""
        raise NotSupported(self.name, "listing of workflows")

    async def republish(self, workflow_id: str) -> int:
        """Not there: a mapped participant has no republish endpoint."""
        raise NotSupported(self.name, "republish endpoint")


class _Entry:
    """One transition of a mapped part (:class:`~aggregator._client.Transition`)."""

    __slots__ = ("at", "state", "version")

    #: A mapping reads no event ids: the entry is placed by its time alone.
    event: str | None = None
    cause: str | None = None

    def __init__(self, state: str, version: int | None, at: str) -> None:
        self.state = state
        self.version = version
        self.at = at


def client_for(
    name: str,
    spec: ParticipantDef,
    *,
    transport: Transport,
    max_bytes: int,
    token: str | None,
    clocks: Clocks | None = None,
) -> ParticipantClient:
    """The client that reads ``spec``: through its mapping if it has one, else the contract's API."""
    kind = MappedClient if spec.mapped else ParticipantClient
    return kind(name, spec, transport=transport, max_bytes=max_bytes, token=token, clocks=clocks)
