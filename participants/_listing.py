"""``GET /status`` query strings: which form (batch or listing), and the listing form's values.

The listing (``?state=S&updated_before=T&limit=N&after=CURSOR``) pages through the workflows a
participant holds, oldest first by ``(updated_at, workflow_id)``. Its cursor is opaque to
clients; inside, it is the hex of the last row's ``updated_at`` and ``workflow_id``, and any
string of hex pairs is a position in that order, so every cursor the OpenAPI document admits is
answered (a workflow changed between two pages moves to the end: it may show twice, or not at
all if it left the states asked for).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from contract import given_once, iso

from .errors import BadRequest

#: The listing form's parameters; any of them makes a ``GET /status`` a listing.
LISTING_PARAMS = ("state", "updated_before", "limit", "after")
#: Every parameter ``GET /status`` takes (an unknown one is a 400: it is a typo, not a filter).
STATUS_PARAMS = frozenset({"workflow_id", *LISTING_PARAMS})
#: Most workflows on one page, and how many without ``limit``.
MAX_PAGE = 1000
DEFAULT_PAGE = 100
#: Most ``state`` values one listing may name.
MAX_STATES = 50
#: A state to list: the characters states are made of (an unknown one simply matches nothing).
STATE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
#: The cursor: hex pairs (the position of the last row of the previous page).
CURSOR_PATTERN = r"^(?:[0-9a-f]{2}){1,200}$"
#: Longest ``updated_before`` accepted.
MAX_TIME_LENGTH = 64

_STATE = re.compile(STATE_PATTERN[1:-1])
_CURSOR = re.compile(CURSOR_PATTERN[1:-1])
_LIMIT = re.compile(r"[0-9]{1,4}")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EARLIEST = iso(datetime.min.replace(tzinfo=UTC))
_LATEST = iso(datetime.max.replace(tzinfo=UTC))


class BadQuery(BadRequest):
    """A ``GET /status`` query string that is refused; the message says why (a 400)."""


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the listing order: after ``(updated_at, workflow_id)``."""

    updated_at: str
    workflow_id: str


@dataclass(frozen=True, slots=True)
class Listing:
    """A parsed listing request."""

    states: tuple[str, ...] = ()
    """Empty: any state."""
    updated_before: str | None = None
    """As the store writes times (:func:`contract.iso`); ``None``: no bound."""
    limit: int = DEFAULT_PAGE
    after: Position | None = None


Query = Mapping[str, Sequence[str]]
"""A query string as each parameter's values, in order."""


def is_listing(query: Query) -> bool:
    """Whether a ``GET /status`` query is the listing form (raises :class:`BadQuery` if it is neither)."""
    unknown = sorted(set(query) - STATUS_PARAMS)
    if unknown:
        raise BadQuery(f"unknown query parameter(s): {', '.join(u[:40] for u in unknown[:5])}")
    listing = any(p in query for p in LISTING_PARAMS)
    if listing and "workflow_id" in query:
        raise BadQuery(
            "give either workflow_id (batch) or state/updated_before/limit/after (listing), not both"
        )
    if not listing and "workflow_id" not in query:
        raise BadQuery(
            "give at least one workflow_id query parameter (batch), "
            "or list with state, updated_before, limit or after"
        )
    return listing


def parse_listing(query: Query) -> Listing:
    """The listing form's values (raises :class:`BadQuery`)."""
    once = given_once(query, ("updated_before", "limit", "after"), BadQuery)
    given = query.get("state", ())
    if len(given) > MAX_STATES:
        raise BadQuery(f"at most {MAX_STATES} state values per request (got {len(given)})")
    states = tuple(dict.fromkeys(given))
    bad = [s for s in states if not _STATE.fullmatch(s)]
    if bad:
        raise BadQuery(f"state must match {STATE_PATTERN} (got {bad[0][:80]!r})")
    before = once.get("updated_before")
    limit = once.get("limit")
    if limit is not None and not (_LIMIT.fullmatch(limit) and 1 <= int(limit) <= MAX_PAGE):
        raise BadQuery(f"limit must be an integer from 1 to {MAX_PAGE} (got {limit[:20]!r})")
    after = once.get("after")
    return Listing(
        states=states,
        updated_before=None if before is None else utc_bound(before),
        limit=DEFAULT_PAGE if limit is None else int(limit),
        after=None if after is None else decode_cursor(after),
    )


def utc_bound(text: str) -> str:
    """An RFC 3339 time as the store writes times (raises :class:`BadQuery`)."""
    found = _RFC3339.fullmatch(text) if len(text) <= MAX_TIME_LENGTH else None
    if found is None:
        raise BadQuery(
            f"updated_before must be an RFC 3339 time, e.g. 2026-11-25T12:00:00Z (got {text[:80]!r})"
        )
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    fraction, sign, off_hours, off_minutes = found.group(7, 8, 9, 10)
    leap = second == 60  # RFC 3339 admits a leap second; datetime does not
    try:
        offset = timedelta(hours=int(off_hours or 0), minutes=int(off_minutes or 0))
        if offset >= timedelta(days=1) or int(off_minutes or 0) > 59:
            raise ValueError("offset out of range")
        zone = timezone(-offset if sign == "-" else offset)
        micros = int((fraction or "0")[:6].ljust(6, "0"))
        moment = datetime(year, month, day, hour, minute, 59 if leap else second, micros, tzinfo=zone)
    except ValueError as exc:
        raise BadQuery(f"updated_before is not a valid time: {text[:80]!r} ({exc})") from exc
    try:
        return iso(moment + timedelta(seconds=1) if leap else moment)
    except OverflowError:
        # Before year 1 or after 9999 once in UTC: earlier, or later, than any row.
        return _EARLIEST if year < 5000 else _LATEST


def encode_cursor(position: Position) -> str:
    """The opaque ``next`` cursor of a page ending at ``position``."""
    return f"{position.updated_at} {position.workflow_id}".encode().hex()


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names (raises :class:`BadQuery` unless it is hex pairs)."""
    if not _CURSOR.fullmatch(cursor):
        raise BadQuery("after must be a cursor from a previous page's next")
    updated_at, _, workflow_id = bytes.fromhex(cursor).decode("utf-8", "replace").partition(" ")
    return Position(updated_at, workflow_id)
