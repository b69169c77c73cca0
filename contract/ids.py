"""Workflow ids and timestamps as they appear on the wire (HTTP paths, event subjects, bodies)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

#: Workflow ids allowed everywhere (HTTP paths, event subjects): docs/design.md, "Contract".
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_WORKFLOW_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Participant names: one MQTT topic level, a TOML key, a metric label.
PARTICIPANT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


def is_valid_workflow_id(value: str) -> bool:
    """Whether ``value`` is a workflow id the contract accepts."""
    return _WORKFLOW_ID.fullmatch(value) is not None  # not match(): "$" also matches before "\n"


def iso(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with microseconds, e.g. ``2026-11-25T12:00:00.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    """The current time in the form of :func:`iso`."""
    return iso(datetime.now(UTC))
