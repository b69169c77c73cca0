"""Calls to one participant's status API, with every failure translated to a :class:`PartFailure`.

Answers are validated: a body over the size bound, not JSON, of the wrong shape, or about
another workflow is ``bad_response``; connection errors and 5xx are ``unavailable``. Only the
definition's base URLs are ever called: the workflow id is validated and percent-encoded into
the path, so nothing in a request can point the aggregator elsewhere.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Container, Coroutine
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from contract import (
    BATCH_READ,
    STATUS_READ,
    ListingBody,
    RepublishBody,
    StatusBody,
    StatusRead,
    tracing,
    utc_now,
)

from ._clocks import Clocks
from ._transport import Transport, TransportError
from .definition import ParticipantDef
from .errors import PartFailure
from .view import Order, Part

_R = TypeVar("_R")
_ANY_STATUS = range(100, 600)

#: Ids per batch call: keeps the request line far below any server's limit.
BATCH_CHUNK = 100

#: Text that ``quote(text, safe="")`` leaves as it is (letters, digits, ``.``, ``_``, ``-``):
#: most workflow ids, which then need no call to ``quote``.
_AS_IS = re.compile(r"[A-Za-z0-9._-]+").fullmatch


class Transition(Protocol):
    """One entry of a participant's history (the contract's :class:`~contract.HistoryEntry`, or a
    mapped part's current state, whose version may be unknown)."""

    @property
    def state(self) -> str: ...
    @property
    def version(self) -> int | None: ...
    @property
    def at(self) -> str: ...
    @property
    def event(self) -> str | None: ...
    @property
    def cause(self) -> str | None: ...


def _quoted(text: str) -> str:
    """``text`` percent-encoded for a URL path segment or query value (``quote`` with nothing safe)."""
    return text if _AS_IS(text) else quote(text, safe="")


class ParticipantClient:
    """One participant's status API over a :class:`~aggregator._transport.Transport`."""

    batch_chunk = BATCH_CHUNK
    """Ids per call of :meth:`fetch_many` (1: the participant has no batch endpoint)."""
    order: Order = "version"
    """What orders its parts (:attr:`Part.order`)."""

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
        """``clocks`` (when given) learns the participant's clock offset from its answers' ``Date``."""
        self.name = name
        self.spec = spec
        self._transport = transport
        self._max_bytes = max_bytes
        self._clocks = clocks
        self._headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}

    async def fetch(self, workflow_id: str) -> Part:
        """This participant's part of ``workflow_id`` (state None if it has no record)."""
        observed, observed_at = time.monotonic(), utc_now()
        status, body = await self._get(f"/status/{_quoted(workflow_id)}", workflow_id)
        latency_ms = (time.monotonic() - observed) * 1000
        if status == 404:
            return _no_record(self.name, observed, observed_at, latency_ms)
        answer = self._parse(STATUS_READ.validate_json, body, workflow_id)
        if answer["workflow_id"] != workflow_id:
            raise self._bad(f"answered for workflow {answer['workflow_id'][:140]!r}", workflow_id)
        return _part(self.name, answer, observed, observed_at, latency_ms)

    async def history(self, workflow_id: str) -> tuple[Transition, ...] | None:
        """This participant's whole history of ``workflow_id`` (None if it has no record)."""
        status, body = await self._get(f"/status/{quote(workflow_id, safe='')}", workflow_id)
        if status == 404:
            return None
        answer = self._parse(StatusBody.model_validate_json, body, workflow_id)
        if answer.workflow_id != workflow_id:
            raise self._bad(f"answered for workflow {answer.workflow_id[:140]!r}", workflow_id)
        return tuple(answer.history)

    async def fetch_many(self, workflow_ids: list[str]) -> dict[str, Part]:
        """Parts of several workflows through the batch endpoint, ``BATCH_CHUNK`` ids per call."""
        parts: dict[str, Part] = {}
        for start in range(0, len(workflow_ids), BATCH_CHUNK):
            chunk = workflow_ids[start : start + BATCH_CHUNK]
            observed, observed_at = time.monotonic(), utc_now()
            query = "workflow_id=" + "&workflow_id=".join([_quoted(w) for w in chunk])
            status, body = await self._get(f"/status?{query}", None)
            latency_ms = (time.monotonic() - observed) * 1000
            if status != 200:
                raise self._bad(f"batch answered HTTP {status}", None)
            answer = self._parse(BATCH_READ.validate_json, body, None)
            wanted = set(chunk)
            name = self.name
            for s in answer["statuses"]:
                workflow_id = s["workflow_id"]
                if workflow_id in wanted:
                    parts[workflow_id] = _part(name, s, observed, observed_at, latency_ms)
            for workflow_id in chunk:
                if workflow_id not in parts:
                    parts[workflow_id] = _no_record(self.name, observed, observed_at, latency_ms)
        return parts

    async def listing(
        self, *, states: list[str] | None, updated_before: str, limit: int, after: str | None = None
    ) -> ListingBody:
        """One page of the workflows this participant holds in ``states``, updated before a time."""
        query = [("updated_before", updated_before), ("limit", str(limit))]
        query += [("state", s) for s in states or ()]
        if after is not None:
            query.append(("after", after))
        path = "/status?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
        status, body = await self._bounded(self._get(path, None), None)
        if status != 200:
            raise self._bad(f"listing answered HTTP {status}", None)
        return self._parse(ListingBody.model_validate_json, body, None)

    async def republish(self, workflow_id: str) -> int:
        """Ask the participant to publish its events of ``workflow_id`` again; how many it did."""
        path = f"/outbox/{quote(workflow_id, safe='')}/republish"
        _, body = await self._bounded(self._call("POST", path, workflow_id, ok=(202,)), workflow_id)
        try:
            return RepublishBody.model_validate_json(body).republished
        except ValueError as exc:
            raise self._bad("invalid republish answer", workflow_id) from exc

    def request_headers(self) -> list[str]:
        """The names of the headers sent with every call (not their values: they may be secrets)."""
        return list(self._headers)

    async def get_any(self, path: str) -> tuple[int, bytes]:
        """``GET path`` within the participant's timeout, whatever it answers below 500 (for checks)."""
        return await self._bounded(self._call("GET", path, None, ok=_ANY_STATUS), None)

    async def date(self) -> str | None:
        """The participant's ``Date`` header in an answer to ``GET /healthz`` (a mapped one's base
        URL), whatever its status, within its timeout; None without one. For measuring its clock
        (:mod:`aggregator._clocks`)."""
        path = "/" if self.spec.mapped else "/healthz"
        async with asyncio.timeout(self.spec.timeout_ms / 1000):
            _, headers, _ = await self._transport.request(
                "GET", self.spec.url + path, self._headers, max_bytes=self._max_bytes
            )
        return headers.get("Date")

    async def _bounded(
        self, call: Coroutine[Any, Any, tuple[int, bytes]], workflow_id: str | None
    ) -> tuple[int, bytes]:
        """``call`` within the participant's ``timeout_ms`` (reads are bounded by their caller)."""
        try:
            async with asyncio.timeout(self.spec.timeout_ms / 1000):
                return await call
        except TimeoutError:
            raise PartFailure(
                "timeout",
                f"no answer within {self.spec.timeout_ms} ms",
                participant=self.name,
                workflow_id=workflow_id,
            ) from None

    def _get(
        self, path: str, workflow_id: str | None, ok: Container[int] = (200, 404)
    ) -> Coroutine[Any, Any, tuple[int, bytes]]:
        return self._call("GET", path, workflow_id, ok=ok)

    def _call(
        self, method: str, path: str, workflow_id: str | None, *, ok: Container[int]
    ) -> Coroutine[Any, Any, tuple[int, bytes]]:
        """One request (a coroutine to await); its status (one of ``ok``) and bounded body, else a
        :class:`PartFailure`. Not a coroutine itself, nor is :meth:`_get`: an untraced call is
        one coroutine (:meth:`_request`), not three awaiting each other."""
        if tracing.enabled():
            return self._traced(method, path, workflow_id, ok=ok)
        return self._request(method, path, workflow_id, ok=ok, headers=self._headers)

    async def _traced(
        self, method: str, path: str, workflow_id: str | None, *, ok: Container[int]
    ) -> tuple[int, bytes]:
        """:meth:`_request` in a client span, its traceparent sent along."""
        with tracing.span(
            f"{method} {self.name}",
            kind="client",
            attributes={"saga.participant": self.name, "url.path": path},
        ):
            headers = dict(self._headers)
            tracing.inject(headers)
            return await self._request(method, path, workflow_id, ok=ok, headers=headers)

    async def _request(
        self, method: str, path: str, workflow_id: str | None, *, ok: Container[int], headers: dict[str, str]
    ) -> tuple[int, bytes]:
        sent = time.time()
        try:
            status, answer_headers, body = await self._transport.request(
                method, self.spec.url + path, headers, max_bytes=self._max_bytes
            )
        except TransportError as exc:
            raise PartFailure(exc.kind, str(exc), participant=self.name, workflow_id=workflow_id) from exc
        if self._clocks is not None:
            self._clocks.answered(self.name, sent, time.time(), answer_headers)
        if status >= 500 or status == 429:
            raise PartFailure("unavailable", f"HTTP {status}", participant=self.name, workflow_id=workflow_id)
        if status not in ok:
            raise self._bad(f"HTTP {status}", workflow_id)
        return status, body

    def _parse(self, validate: Callable[[bytes], _R], body: bytes, workflow_id: str | None) -> _R:
        """``validate(body)`` (a model's or a type adapter's ``validate_json``: parsed and checked
        in one pass by pydantic-core), any refusal a ``bad_response``."""
        try:
            return validate(body)
        except (ValueError, ValidationError) as exc:
            raise self._bad(f"invalid answer: {str(exc).splitlines()[0][:200]}", workflow_id) from exc

    def _bad(self, detail: str, workflow_id: str | None) -> PartFailure:
        return PartFailure("bad_response", detail, participant=self.name, workflow_id=workflow_id)


def _part(name: str, answer: StatusRead, observed: float, observed_at: str, latency_ms: float) -> Part:
    history = answer.get("history")
    return Part(
        name,
        answer["state"],
        answer["version"],
        answer["updated_at"],
        observed,
        observed_at,
        "live",
        latency_ms,
        None,
        tuple([h["state"] for h in history]) if history else (),
    )


def _no_record(name: str, observed: float, observed_at: str, latency_ms: float) -> Part:
    """The participant answered that it has no record of the workflow (its 404)."""
    return Part(name, None, 0, None, observed, observed_at, "live", latency_ms=latency_ms)
