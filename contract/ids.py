"""Workflow ids and timestamps as they appear on the wire (HTTP paths, event subjects, bodies)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field, StrictStr

#: Workflow ids allowed everywhere (HTTP paths, event subjects): docs/design.md, "Contract".
#: The dot-segments "." and ".." are refused: in a URL path they do not round-trip (clients and
#: proxies normalise "/status/.." to "/").
#: The characters and length alone (a pattern pydantic's regex engine runs; it has no lookahead).
WORKFLOW_ID_CHARS = r"^[A-Za-z0-9._:-]{1,128}$"
#: The whole rule as one ECMA-262 pattern, for JSON Schema and OpenAPI documents.
WORKFLOW_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9._:-]{1,128}$"
_WORKFLOW_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9._:-]{1,128}")
#: How the rule reads in error messages.
WORKFLOW_ID_RULE = "[A-Za-z0-9._:-]{1,128}, not '.' or '..'"
#: Highest part version on the wire: a SQLite INTEGER; a larger one is refused, not kept for good.
MAX_VERSION = 2**63 - 1
#: Participant names: one MQTT topic level, a TOML key, a metric label.
PARTICIPANT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


def _not_dot_segment(value: str) -> str:
    if value in (".", ".."):
        raise ValueError("'.' and '..' are not workflow ids")
    return value


#: A workflow id as a pydantic field type (its JSON Schema shows the whole rule).
WorkflowId = Annotated[
    StrictStr,
    Field(pattern=WORKFLOW_ID_CHARS, json_schema_extra={"pattern": WORKFLOW_ID_PATTERN}),
    AfterValidator(_not_dot_segment),
]


def is_valid_workflow_id(value: str) -> bool:
    """Whether ``value`` is a workflow id the contract accepts."""
    return _WORKFLOW_ID.fullmatch(value) is not None  # not match(): "$" also matches before "\n"


def iso(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with microseconds, e.g. ``2026-11-25T12:00:00.123456Z``."""
    # isoformat, not strftime: this runs for every part fetched and every view (3x cheaper).
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def epoch_s(moment: str) -> float | None:
    """RFC 3339 time ``moment`` as POSIX seconds; None if it is not a time. A time without a
    zone is taken as UTC."""
    try:
        then = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        if then.tzinfo is None:
            then = then.replace(tzinfo=UTC)
        return then.timestamp()
    except (ValueError, OverflowError):  # not a time, or one a timestamp cannot hold
        return None


def age_s(moment: str, now: datetime | None = None) -> float | None:
    """How many seconds ago (never less than 0) RFC 3339 time ``moment`` was, by this clock;
    None if it is not a time. A time without a zone is taken as UTC."""
    at = epoch_s(moment)
    if at is None:
        return None
    return max(0.0, (now.timestamp() if now is not None else time.time()) - at)


_second: tuple[int, str] = (-1, "")
"""The last whole second :func:`utc_now` formatted (seconds since the epoch, and its text)."""


def utc_now() -> str:
    """The current time in the form of :func:`iso` (what ``iso(datetime.now(UTC))`` gives).

    Formatted from the clock's nanoseconds, the date and time of day once per second: this runs
    for every view and every call to a participant (a quarter of the cost of ``iso``).
    """
    global _second
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    whole, text = _second
    if seconds != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second = (seconds, text)
    return f"{text}.{nanoseconds // 1000:06d}Z"
