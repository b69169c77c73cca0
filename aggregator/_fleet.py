"""Fleet queries: in-flight workflows by derived state, step and age, a page at a time; counts by state.

There is no workflow table to query: the initiator lists the workflows it holds in the states
in which a workflow may still be running (oldest first, its listing of §4), and each page of
that listing is viewed in batches (one batch call per participant) and filtered on what the
views derive. What bounds the work is said in every answer:

* ``GET /workflows?state=…``: a page ends when it holds ``limit`` views, when the listing is
  through, or when it has looked at :data:`PAGE_BUDGET` listed workflows (at least ``limit``)
  or spent :data:`PAGE_TIME_S`; then ``budget_exhausted`` is true and ``next`` goes on from
  there. A query that matches few workflows may answer pages with few views, or none, and a
  ``next``: follow it until ``next`` is null.
* ``GET /summary``: counts by derived state over at most :data:`SUMMARY_BUDGET` listed
  workflows and :data:`SUMMARY_TIME_S`; ``complete`` says whether the listing was through.

Only the initiator's states that can lead to a wanted state are listed (``state=IN_PROGRESS``
asks the packaged saga's order service for its ``PENDING`` orders only), and an
``updated_before`` bound goes to the initiator too (its part cannot have changed after the
workflow's newest part). A workflow over in a state the initiator alone can tell (the packaged
saga's ``CONFIRMED`` order: ``COMPLETED``) is never listed: these are in-flight queries.

The cursor is a place in the initiator's listing, checked by a digest: a cursor that was changed,
cut or made up is refused (400). It is not secret and grants nothing (any position is one a
client may read from); every aggregator of the same definition accepts the cursors of the others.
A page that ends at the end of one of the initiator's pages goes on from the initiator's own
``next``; one that ends inside one (it had ``limit`` views before that page's end) goes on from
the start of that page, past the last workflow it went through, by that workflow's place in the
listing's order (``updated_at``, then ``workflow_id``, as the initiator lists: docs/design.md,
"Contract"). No workflow is listed twice to find where a page ended, so one that changes between
two pages moves to the end of the listing (it may show twice, or not at all if it left the
states listed) and never makes the next page skip another.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

from contract import ListingBody, StatusBody, epoch_s, given_once, iso

from ._redrive import record_stalled
from .definition import PRESENT, Definition
from .errors import BadRequest, PartFailure
from .metrics import Metrics
from .options import MAX_BATCH
from .view import View

#: Views per page: at most, and without ``limit``.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: Listed workflows one page looks at, at most (or ``limit``, if that is more), and its time.
PAGE_BUDGET = 2000
PAGE_TIME_S = 5.0
#: Listed workflows one summary counts, at most, and its time.
SUMMARY_BUDGET = 20_000
SUMMARY_TIME_S = 10.0
#: Workflows listed per call to the initiator while summing up (viewed ``MAX_BATCH`` at a time,
#: :data:`_CONCURRENT` batches at once).
_SUMMARY_PAGE = 500
_CONCURRENT = 5
#: Most ``state`` values one query may name.
MAX_STATES = 50
#: The derived state of a view no rule matches.
UNMATCHED = "UNKNOWN"
#: The cursor: URL-safe base64 of a digest and a :class:`Resume` (the initiator's position, and
#: at most 1 + 2 + 1024 + 2 + 256 + 128 bytes with the last workflow gone through).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{16,1900}$"
#: Longest initiator position a cursor carries, in UTF-8 bytes (a longer one is the initiator's bad answer).
_MAX_POSITION = 1024
_DIGEST = 9
#: What the digest of a cursor that carries the last workflow gone through is made with (another
#: digest than that of a bare position: neither passes for the other).
_RESUME_PERSON = b"fleet resume"
#: Longest time accepted in ``updated_before`` / ``updated_after``.
MAX_TIME_LENGTH = 64
#: What the initiator is asked for without ``updated_before``: later than any time it holds.
_NO_BOUND = "9999-12-31T23:59:59.999999Z"
#: The parameters of a fleet query, and those given at most once.
QUERY_PARAMS = frozenset({"state", "step", "updated_before", "updated_after", "limit", "cursor"})
_ONCE = ("step", "updated_before", "updated_after", "limit", "cursor")

_CURSOR = re.compile(CURSOR_PATTERN[1:-1])
_LIMIT = re.compile(r"[0-9]{1,4}")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


class _Listing(Protocol):
    async def listing(
        self, *, states: list[str] | None, updated_before: str, limit: int, after: str | None = None
    ) -> ListingBody: ...


Views = Callable[[Sequence[str]], Awaitable[tuple[list[View], list[str]]]]


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a page goes on from in the initiator's listing (what a cursor holds)."""

    position: str | None
    """The initiator's position to list after (its ``next``); None: from the oldest."""
    last: tuple[str, str] | None = None
    """``(updated_at, workflow_id)`` of the last listed workflow the previous page went through,
    when that page ended inside one of the initiator's pages: listed from ``position`` again,
    the workflows up to it in the listing's order are passed over. None: none to pass over."""

    def passed(self, status: StatusBody) -> bool:
        """Whether the previous page already went through ``status``'s place in the listing
        (by time, then id: times compared as times, whatever digits or zone they are written in)."""
        if self.last is None:
            return False
        at, last_at = epoch_s(status.updated_at), epoch_s(self.last[0])
        if at is None or last_at is None:  # not times (the contract says they are): as text
            return (status.updated_at, status.workflow_id) <= self.last
        return (at, status.workflow_id) <= (last_at, self.last[1])


@dataclass(frozen=True, slots=True)
class FleetQuery:
    """What ``GET /workflows?state=…`` asks (parsed by :func:`parse_query`)."""

    states: frozenset[str]
    step: str | None = None
    updated_before: float | None = None
    """POSIX seconds: only workflows whose newest part changed strictly before."""
    updated_after: float | None = None
    """POSIX seconds: only workflows whose newest part changed strictly after."""
    limit: int = DEFAULT_LIMIT
    after: Resume | None = None
    """Where to go on from in the initiator's listing (from the cursor); None: from the oldest."""

    def matches(self, view: View) -> bool:
        """Whether ``view`` is one this query asks for."""
        if view.state not in self.states or (self.step is not None and view.step != self.step):
            return False
        if self.updated_before is None and self.updated_after is None:
            return True
        changed = view.changed_at
        if changed is None:
            return False
        if self.updated_before is not None and not changed < self.updated_before:
            return False
        return self.updated_after is None or changed > self.updated_after


@dataclass(frozen=True, slots=True)
class FleetPage:
    """One page of a fleet query."""

    views: list[View]
    next: str | None
    """The cursor of the next page; None when the listing is through."""
    scanned: int
    """Listed workflows this page went through."""
    budget_exhausted: bool
    """The page ended on its budget (workflows looked at, or time), not on ``limit`` or the data."""


@dataclass(frozen=True, slots=True)
class Summary:
    """In-flight workflows counted by derived state."""

    counts: dict[str, int]
    scanned: int
    complete: bool


def derived_states(definition: Definition) -> list[str]:
    """Every state a view of this definition can be in: its rules' states, and ``UNKNOWN``."""
    return list(dict.fromkeys([*(rule.state for rule in definition.rules), UNMATCHED]))


def listed_states(definition: Definition, wanted: frozenset[str] | None) -> list[str] | None:
    """The initiator states to list for views in ``wanted`` (None: any state): its states in which a
    workflow may still run (:meth:`Definition.open_initiator_states`) from which a rule can derive
    a wanted state. None: the initiator declares no states (list them all)."""
    open_states = definition.open_initiator_states()
    if open_states is None or wanted is None:
        return open_states
    return [state for state in open_states if _can_derive(definition, state, wanted)]


def _can_derive(definition: Definition, initiator_state: str, wanted: frozenset[str]) -> bool:
    """Whether some parts with the initiator in ``initiator_state`` derive a state in ``wanted``."""
    initiator = definition.initiator
    assert initiator is not None
    for rule in definition.rules:
        condition = rule.when.get(initiator)
        if condition is not None:
            options = condition if isinstance(condition, list) else [condition]
            if not any(o in (initiator_state, PRESENT) for o in options):
                continue  # cannot match in this state
        if rule.state in wanted:
            return True
        if len(rule.when) == (0 if condition is None else 1):
            return False  # matches whatever the other parts are: no later rule is reached
    return UNMATCHED in wanted


# -- the query string ------------------------------------------------------------------------


def parse_query(values: Mapping[str, Sequence[str]], definition: Definition, *, key: bytes) -> FleetQuery:
    """A fleet query's parameters (each name's values, in order), checked (:class:`BadRequest`)."""
    once = given_once(values, _ONCE, BadRequest)
    given = values.get("state", ())
    if not given:
        raise BadRequest("give at least one state (e.g. state=IN_PROGRESS)")
    if len(given) > MAX_STATES:
        raise BadRequest(f"at most {MAX_STATES} state values per request (got {len(given)})")
    states = list(dict.fromkeys(given))
    known = derived_states(definition)
    unknown = [s for s in states if s not in known]
    if unknown:
        raise BadRequest(f"unknown state {unknown[0][:80]!r} (this workflow's states: {', '.join(known)})")
    step = once.get("step")
    if step is not None and step not in definition.participants:
        raise BadRequest(
            f"unknown step {step[:80]!r} (a step names a participant: {', '.join(definition.participants)})"
        )
    limit = once.get("limit")
    if limit is not None and not (_LIMIT.fullmatch(limit) and 1 <= int(limit) <= MAX_LIMIT):
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT} (got {limit[:20]!r})")
    before, after = once.get("updated_before"), once.get("updated_after")
    cursor = once.get("cursor")
    return FleetQuery(
        states=frozenset(states),
        step=step,
        updated_before=None if before is None else parse_time(before, "updated_before"),
        updated_after=None if after is None else parse_time(after, "updated_after"),
        limit=DEFAULT_LIMIT if limit is None else int(limit),
        after=None if cursor is None else decode_cursor(cursor, key),
    )


def parse_time(text: str, name: str) -> float:
    """An RFC 3339 time as POSIX seconds (:class:`BadRequest`); times beyond what this clock can
    hold are earlier or later than any workflow's."""
    found = _RFC3339.fullmatch(text) if len(text) <= MAX_TIME_LENGTH else None
    if found is None:
        raise BadRequest(f"{name} must be an RFC 3339 time, e.g. 2026-11-25T12:00:00Z (got {text[:80]!r})")
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    fraction, sign, off_hours, off_minutes = found.group(7, 8, 9, 10)
    leap = second == 60  # RFC 3339 admits a leap second; datetime does not
    try:
        if int(off_hours or 0) > 23 or int(off_minutes or 0) > 59:
            raise ValueError("offset out of range")
        offset = timedelta(hours=int(off_hours or 0), minutes=int(off_minutes or 0))
        zone = timezone(-offset if sign == "-" else offset)
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        moment = datetime(year, month, day, hour, minute, 59 if leap else second, micros, tzinfo=zone)
    except ValueError as exc:
        raise BadRequest(f"{name} is not a valid time: {text[:80]!r} ({exc})") from exc
    try:
        return moment.timestamp() + (1 if leap else 0)
    except (OverflowError, ValueError, OSError):
        return float("-inf") if year < 5000 else float("inf")


def _bound(moment: float) -> str:
    """POSIX seconds as the RFC 3339 ``updated_before`` the initiator is asked for."""
    try:
        return iso(datetime.fromtimestamp(moment, UTC))
    except (OverflowError, ValueError, OSError):
        return "0001-01-01T00:00:00.000000Z" if moment < 0 else _NO_BOUND


def cursor_key(definition: Definition) -> bytes:
    """The key of the cursors' digest: the same for every aggregator of this definition."""
    initiator = definition.initiator or ""
    url = definition.participants[initiator].url if initiator in definition.participants else ""
    return hashlib.blake2b(f"fleet cursor|{definition.name}|{initiator}|{url}".encode()).digest()[:32]


def _digest(body: bytes, key: bytes, *, resume: bool) -> bytes:
    person = _RESUME_PERSON if resume else b""
    return hashlib.blake2b(body, key=key, digest_size=_DIGEST, person=person).digest()


def _field(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def encode_cursor(resume: Resume, key: bytes) -> str:
    """The opaque cursor of ``resume``: its digest, then the initiator's position alone (as
    before there was a :attr:`Resume.last`), or the position (0: none, 1 and its length: one),
    ``updated_at`` (its length first) and ``workflow_id``."""
    if resume.last is None:
        if resume.position is None:
            raise ValueError("a cursor goes on from somewhere")
        body = resume.position.encode()
    else:
        updated_at, workflow_id = resume.last
        position = b"\0" if resume.position is None else b"\1" + _field(resume.position)
        body = position + _field(updated_at) + workflow_id.encode()
    digest = _digest(body, key, resume=resume.last is not None)
    return base64.urlsafe_b64encode(digest + body).decode().rstrip("=")


def _take(body: bytes) -> tuple[str, bytes]:
    size = int.from_bytes(body[:2], "big")
    if len(body) < 2 + size:
        raise ValueError("cut")
    return body[2 : 2 + size].decode(), body[2 + size :]


def decode_cursor(cursor: str, key: bytes) -> Resume:
    """Where a cursor goes on from (:class:`BadRequest` if it is not one this definition's
    aggregators made, unchanged)."""
    if not _CURSOR.fullmatch(cursor):
        raise BadRequest("cursor must be the next of a previous page, unchanged (this one is malformed)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        digest, body = raw[:_DIGEST], raw[_DIGEST:]
        if _digest(body, key, resume=False) == digest:
            return Resume(body.decode())
        if _digest(body, key, resume=True) != digest or body[:1] not in (b"\0", b"\1"):
            raise ValueError("digest")
        position: str | None = None
        if body[:1] == b"\1":
            position, body = _take(body[1:])
        else:
            body = body[1:]
        updated_at, rest = _take(body)
        return Resume(position, (updated_at, rest.decode()))
    except (binascii.Error, ValueError):
        raise BadRequest(
            "cursor must be the next of a previous page, unchanged (this one was changed, cut, "
            "or made by an aggregator of another definition)"
        ) from None


# -- the scans -------------------------------------------------------------------------------


class Fleet:
    """Fleet queries and summaries over the initiator's listing (see the module docstring)."""

    def __init__(
        self,
        *,
        definition: Definition,
        initiator: Callable[[], _Listing],
        views: Views,
        metrics: Metrics,
        offsets: Mapping[str, float] | None = None,
    ) -> None:
        """``initiator`` gives the initiator's client (:class:`NoInitiator` without one);
        ``offsets`` are the participants' clock corrections (seconds ahead of this clock)."""
        self._definition = definition
        self._initiator = initiator
        self._views = views
        self._metrics = metrics
        self._offsets = offsets if offsets is not None else {}  # the live table: never a copy
        self.key = cursor_key(definition)

    def parse(self, values: Mapping[str, Sequence[str]]) -> FleetQuery:
        """:func:`parse_query` with this fleet's cursor key."""
        return parse_query(values, self._definition, key=self.key)

    def _position(self, page: ListingBody) -> str | None:
        found = page.next
        if found is not None and len(found.encode()) > _MAX_POSITION:
            name = self._definition.initiator or "initiator"
            raise PartFailure("bad_response", "listing cursor too long", participant=name)
        return found

    async def query(self, query: FleetQuery) -> FleetPage:
        """One page of views (:class:`NoInitiator`; :class:`PartFailure` if the initiator fails,
        :class:`NotSupported` if it is read through a mapping)."""
        client = self._initiator()
        states = listed_states(self._definition, query.states)
        if states == []:
            return FleetPage([], None, 0, budget_exhausted=False)
        before = _NO_BOUND
        if query.updated_before is not None:  # its own clock: a workflow's newest part is no older
            ahead = max(0.0, self._offsets.get(self._definition.initiator or "", 0.0))
            before = _bound(query.updated_before + ahead)
        budget = max(PAGE_BUDGET, query.limit)
        ends = time.monotonic() + PAGE_TIME_S
        found: list[View] = []
        scanned = passed_over = 0
        resume = query.after or Resume(None)
        while True:
            if scanned + passed_over >= budget or time.monotonic() >= ends:
                cursor = None if resume == Resume(None) else encode_cursor(resume, self.key)
                return FleetPage(found, cursor, scanned, budget_exhausted=True)
            room = query.limit - len(found)
            size = min(MAX_BATCH, budget - scanned - passed_over, max(2 * room, 20))
            page = await client.listing(
                states=states, updated_before=before, limit=size, after=resume.position
            )
            statuses = page.statuses
            if resume.last is not None:  # what the previous page went through, listed again
                statuses = [status for status in statuses if not resume.passed(status)]
                # Counted against the budget (not as scanned: they were scanned before), so a
                # made-up position past everything lists the initiator within the budget, not
                # to its end.
                passed_over += len(page.statuses) - len(statuses)
            ids = [status.workflow_id for status in statuses]
            views, _ = await self._views(ids) if ids else ([], [])
            by_id = {view.workflow_id: view for view in views if query.matches(view)}
            matched = [(i, by_id[w]) for i, w in enumerate(ids) if w in by_id]
            if len(matched) > room:  # the page ends inside this batch: go on right after its last view
                last = matched[room - 1][0]
                found += [view for _, view in matched[:room]]
                row = statuses[last]
                cursor = encode_cursor(Resume(resume.position, (row.updated_at, row.workflow_id)), self.key)
                return FleetPage(found, cursor, scanned + last + 1, budget_exhausted=False)
            found += [view for _, view in matched]
            scanned += len(ids)
            after = self._position(page)
            if after is None:
                return FleetPage(found, None, scanned, budget_exhausted=False)
            # Past the last workflow passed over once this batch listed one beyond it (the order
            # puts every later one beyond it too).
            resume = Resume(after, None if statuses else resume.last)
            if len(found) == query.limit:
                return FleetPage(found, encode_cursor(resume, self.key), scanned, budget_exhausted=False)

    async def summary(self, updated_after: float | None = None) -> Summary:
        """In-flight workflows counted by derived state (only those whose newest part changed after
        ``updated_after``, when given). A complete count also sets the stalled-workflow gauges, the
        one full count of them (why the stall scans set them too: :func:`record_stalled`)."""
        client = self._initiator()
        counts = dict.fromkeys(derived_states(self._definition), 0)
        states = listed_states(self._definition, None)
        reasons: Counter[str] = Counter()
        stalled = 0
        scanned = 0
        after: str | None = None
        ends = time.monotonic() + SUMMARY_TIME_S
        while True:
            if scanned >= SUMMARY_BUDGET or time.monotonic() >= ends:
                return Summary(counts, scanned, complete=False)
            size = min(_SUMMARY_PAGE, SUMMARY_BUDGET - scanned)
            page = await client.listing(states=states, updated_before=_NO_BOUND, limit=size, after=after)
            ids = [status.workflow_id for status in page.statuses]
            batches = [ids[i : i + MAX_BATCH] for i in range(0, len(ids), MAX_BATCH)]
            for start in range(0, len(batches), _CONCURRENT):
                done = await asyncio.gather(*(self._views(b) for b in batches[start : start + _CONCURRENT]))
                for views, _ in done:
                    for view in views:
                        if view.stall is not None:
                            stalled += 1
                            reasons[view.stall.reason] += 1
                        if updated_after is not None:
                            changed = view.changed_at
                            if changed is None or not changed > updated_after:
                                continue
                        counts[view.state] = counts.get(view.state, 0) + 1
            scanned += len(ids)
            after = self._position(page)
            if after is None:
                record_stalled(self._metrics, stalled, reasons)
                return Summary(counts, scanned, complete=True)
