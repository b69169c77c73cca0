"""Fleet queries without servers: which initiator states are listed, times, cursors."""

from __future__ import annotations

import base64
import hashlib
import math
import re

import pytest

from aggregator import load_definition
from aggregator._fleet import (
    CURSOR_PATTERN,
    Resume,
    cursor_key,
    decode_cursor,
    derived_states,
    encode_cursor,
    listed_states,
    parse_query,
    parse_time,
)
from aggregator.errors import BadRequest

SAGA = load_definition()


@pytest.mark.parametrize(
    ("wanted", "listed"),
    [
        ({"IN_PROGRESS"}, ["PENDING"]),
        ({"COMPENSATED"}, ["CANCELLED"]),
        ({"FAILED"}, ["PENDING", "CANCELLED"]),
        ({"COMPENSATING"}, ["PENDING", "CANCELLED"]),
        ({"COMPLETED"}, []),
        ({"UNKNOWN"}, []),  # an order's own rules always match first
    ],
)
def test_only_the_initiator_states_that_can_lead_to_a_wanted_state_are_listed(
    wanted: set[str], listed: list[str]
) -> None:
    """The packaged saga: a CONFIRMED order is over, a CANCELLED one can only be over or compensating."""
    assert listed_states(SAGA, frozenset(wanted)) == listed
    assert listed_states(SAGA, None) == ["PENDING", "CANCELLED"]


def test_the_derived_states_are_the_rules_states_and_unknown() -> None:
    """Each once, in the rules' order."""
    assert derived_states(SAGA) == [
        "COMPLETED", "FAILED", "COMPENSATING", "COMPENSATED", "IN_PROGRESS", "UNKNOWN",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("1970-01-01T01:00:00+01:00", 0.0),
        ("1970-01-01t00:00:00.5z", 0.5),
        ("1969-12-31T23:59:60Z", 0.0),
    ],
)
def test_rfc3339_times_with_zones_fractions_and_leap_seconds(text: str, seconds: float) -> None:
    """What RFC 3339 allows parses, to POSIX seconds."""
    assert parse_time(text, "t") == seconds


def test_the_extremes_of_rfc3339_parse_and_bound_the_listing() -> None:
    """Year 1 and year 9999, a day's offset away: far before and after now, and asked of the
    initiator as the earliest and latest bounds it can hold."""
    from aggregator._fleet import _bound

    early, late = parse_time("0001-01-01T00:00:00+23:59", "t"), parse_time("9999-12-31T23:59:59-23:59", "t")
    assert early < -6e10 and late > 2.5e11
    assert _bound(late) == "9999-12-31T23:59:59.999999Z"
    assert _bound(-math.inf) == "0001-01-01T00:00:00.000000Z" and _bound(math.inf) == _bound(late)


@pytest.mark.parametrize(
    "text", ["", "2026-02-30T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01T00:00:00+24:00", "2026-01-01"]
)
def test_what_is_not_an_rfc3339_time_is_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="updated_after"):
        parse_time(text, "updated_after")


@pytest.mark.parametrize(
    "resume",
    [
        Resume("32303236 776f726b"),
        Resume("32303236 776f726b", ("2026-11-25T12:00:00.123456Z", "ord-42")),
        Resume(None, ("2026-11-25T12:00:00.123456Z", "ord-42")),
        Resume("é" * 512, ("\u00e9" * 64, "w" * 128)),  # the longest: within the pattern
    ],
)
def test_a_cursor_round_trips_and_any_change_is_refused(resume: Resume) -> None:
    """Where to go on from comes back as given; a cursor of another definition, or changed, does not."""
    key = cursor_key(SAGA)
    cursor = encode_cursor(resume, key)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor, key) == resume
    other = cursor_key(SAGA.with_urls({"order": "http://127.0.0.1:1"}))
    for bad in (cursor[:-1], cursor[1:], cursor.swapcase(), "A" * len(cursor)):
        with pytest.raises(BadRequest, match="cursor"):
            decode_cursor(bad, key)
    with pytest.raises(BadRequest, match="cursor"):
        decode_cursor(cursor, other)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_bare_position_is_a_cursor_as_before_and_passes_for_no_other() -> None:
    """A cursor without a workflow to pass over is the digest and the initiator's position, as
    aggregators made it before (they and this one accept each other's); its body signed as the
    other kind of cursor is refused."""
    key = cursor_key(SAGA)
    body = b"32303236 776f726b"
    before = hashlib.blake2b(body, key=key, digest_size=9).digest()
    assert encode_cursor(Resume("32303236 776f726b"), key) == _b64(before + body)
    as_resume = hashlib.blake2b(body, key=key, digest_size=9, person=b"fleet resume").digest()
    with pytest.raises(BadRequest, match="cursor"):
        decode_cursor(_b64(as_resume + body), key)
    with pytest.raises(ValueError, match="somewhere"):
        encode_cursor(Resume(None), key)


def test_a_query_keeps_its_states_once_and_its_limit() -> None:
    """Repeated states count once; limit defaults to 100."""
    query = parse_query({"state": ["FAILED", "FAILED", "IN_PROGRESS"]}, SAGA, key=b"k")
    assert (query.states, query.limit, query.after) == (frozenset({"FAILED", "IN_PROGRESS"}), 100, None)


def test_passing_over_compares_times_as_times_then_ids() -> None:
    """Fraction digits and zones do not change the order: 12:00:00.5Z is after 12:00:00Z, and
    13:00:00+01:00 is 12:00:00Z (then the id decides)."""
    from contract import StatusBody

    def status(at: str, workflow_id: str) -> StatusBody:
        return StatusBody.model_validate(
            {"participant": "order", "workflow_id": workflow_id, "state": "PENDING", "version": 1,
             "updated_at": at, "history": [], "data": {}}
        )  # fmt: skip

    resume = Resume("p", ("2026-01-01T12:00:00Z", "b"))
    assert resume.passed(status("2026-01-01T11:59:59.999Z", "z"))
    assert not resume.passed(status("2026-01-01T12:00:00.5Z", "a"))
    assert resume.passed(status("2026-01-01T13:00:00+01:00", "a"))
    assert resume.passed(status("2026-01-01T13:00:00+01:00", "b"))
    assert not resume.passed(status("2026-01-01T13:00:00+01:00", "c"))
    assert not Resume("p").passed(status("2000-01-01T00:00:00Z", "a"))
