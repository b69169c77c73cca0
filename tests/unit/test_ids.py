"""The workflow-id rule, as the regex check and as the pydantic field type (they must agree)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from contract import WorkflowId, is_valid_workflow_id, iso, utc_now

VALID = [
    "a",
    "ord-42",
    "ORD_42",
    "A.b_c:d-1",
    "1",
    "...",
    ".hidden",
    "a..b",
    "urn:order:2026-01-01",
    "x" * 128,
    "0123456789:._-",
]
INVALID = [
    "",
    ".",
    "..",
    "x" * 129,
    "a/b",
    "/",
    "a\\b",
    "a b",
    " ord",
    "ord ",
    "ord\t1",
    "ord-1\n",
    "\nord-1",
    "ord\x00",
    "ordé",
    "ördér",
    "ord\u200b1",  # zero-width space
    "ord\u0663",  # an Arabic-Indic digit
    "\uff4f\uff52\uff44",  # full-width letters
    "a?b",
    "a#b",
    "a%2Fb",
    "a+b",
    "a@b",
]

_ADAPTER: TypeAdapter[str] = TypeAdapter(WorkflowId)


def _field_accepts(value: str) -> bool:
    try:
        _ADAPTER.validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value", VALID)
def test_valid_ids(value: str) -> None:
    assert is_valid_workflow_id(value) is True
    assert _field_accepts(value) is True


@pytest.mark.parametrize("value", INVALID)
def test_invalid_ids(value: str) -> None:
    assert is_valid_workflow_id(value) is False
    assert _field_accepts(value) is False


def test_field_type_is_strict() -> None:
    with pytest.raises(ValidationError):
        _ADAPTER.validate_python(42)
    with pytest.raises(ValidationError):
        _ADAPTER.validate_python(b"ord-1")


def test_iso_is_utc_with_microseconds() -> None:
    moment = datetime(2026, 11, 25, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert iso(moment) == "2026-11-25T12:00:00.123456Z"
    assert iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def test_utc_now_reads_as_iso_of_now() -> None:
    """The same form as ``iso(datetime.now(UTC))``, and between two such readings."""
    for _ in range(2000):
        before = iso(datetime.now(UTC))
        now = utc_now()
        after = iso(datetime.now(UTC))
        assert before <= now <= after
        assert len(now) == len(before) and now[10] == "T" and now.endswith("Z")
        assert iso(datetime.fromisoformat(now.replace("Z", "+00:00"))) == now
