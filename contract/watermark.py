"""Watermarks: a producer's periodic statement that everything it committed before a time is published.

A participant's relay publishes one on ``{prefix}/watermark/{producer}`` whenever its outbox is
empty (at most once per interval): every change it committed before ``through`` has been
published and acknowledged by the broker, so a consumer that has been subscribed since before
those events, and received them in order, has seen them all. The aggregator bounds the
staleness of a quiet workflow's parts by their producer's latest watermark instead of letting
it grow with the time since the last event.
"""

from __future__ import annotations

import json
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from .errors import InvalidEvent
from .ids import PARTICIPANT_NAME_PATTERN, utc_now

#: A watermark is small; anything larger is not one.
MAX_WATERMARK_BYTES = 1024


class Watermark(BaseModel):
    """``{"specversion": "1.0", "id", "source", "type": "{source}.watermark", "time", "through"}``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: StrictStr = Field(min_length=1, max_length=128)
    source: StrictStr = Field(pattern=PARTICIPANT_NAME_PATTERN)
    type: StrictStr = Field(max_length=80)
    time: StrictStr = Field(max_length=64)
    through: StrictStr = Field(max_length=64)
    """RFC 3339: every change the producer committed before this instant is published."""

    def to_json(self) -> bytes:
        """The wire form."""
        return self.model_dump_json().encode()


def watermark_topic(prefix: str, producer: str) -> str:
    """``saga`` + ``payment`` → ``saga/watermark/payment``."""
    return f"{prefix}/watermark/{producer}"


def new_watermark(producer: str, through: str) -> Watermark:
    """A watermark of ``producer`` up to ``through``."""
    return Watermark(
        id=str(uuid.uuid4()), source=producer, type=f"{producer}.watermark", time=utc_now(), through=through
    )


def parse_watermark(topic: str, payload: bytes, *, prefix: str) -> Watermark:
    """Parse one watermark message; :class:`InvalidEvent` says why it is not one."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[1] != "watermark":
        raise InvalidEvent(f"topic is not {prefix}/watermark/{{producer}}", topic=topic)
    if len(payload) > MAX_WATERMARK_BYTES:
        raise InvalidEvent("watermark too large", topic=topic)
    try:
        mark = Watermark.model_validate(json.loads(payload.decode("utf-8")))
    except (ValueError, RecursionError, ValidationError) as exc:
        raise InvalidEvent(f"not a watermark: {type(exc).__name__}", topic=topic) from exc
    if mark.source != parts[2] or mark.type != f"{mark.source}.watermark":
        raise InvalidEvent("watermark source or type does not match its topic", topic=topic)
    return mark
