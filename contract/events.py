"""The event contract (docs/design.md, "Events"): CloudEvents 1.0 structured JSON on ``{prefix}/{producer}/{event}``.

Parsing is strict and total: any payload either becomes a :class:`CloudEvent` or raises
:class:`InvalidEvent` with a reason a person can read, never another exception.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from . import tracing
from .errors import InvalidEvent
from .ids import MAX_VERSION, PARTICIPANT_NAME_PATTERN, WorkflowId, utc_now

_NAME = re.compile(PARTICIPANT_NAME_PATTERN)

#: Payloads above this size are dead-lettered unparsed: no valid saga event comes near it.
MAX_EVENT_BYTES = 256 * 1024


class EventData(BaseModel):
    """``data`` of a saga event: the producer's local state *after* the event, plus domain fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    state: StrictStr = Field(min_length=1, max_length=64)
    version: Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured mode, as the saga's participants publish them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: StrictStr = Field(min_length=1, max_length=128)
    source: StrictStr = Field(min_length=1, max_length=64)
    type: StrictStr = Field(min_length=3, max_length=129)
    subject: WorkflowId
    time: StrictStr = Field(min_length=1, max_length=64)
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: StrictStr | None = Field(default=None, max_length=55)
    data: EventData

    @property
    def domain(self) -> dict[str, Any]:
        """The domain fields carried beside ``state`` and ``version``."""
        return dict(self.data.model_extra or {})

    def to_json(self) -> bytes:
        """The event's wire form (UTF-8 JSON, no insignificant whitespace)."""
        return self.model_dump_json(exclude_none=True).encode()


def event_type(producer: str, name: str) -> str:
    """``payment`` + ``authorized`` → ``payment.authorized``."""
    return f"{producer}.{name}"


def topic_for(prefix: str, type_: str) -> str:
    """``saga`` + ``payment.authorized`` → ``saga/payment/authorized``; a command's type
    ``command.payment.refund`` → ``saga/command/payment/refund``."""
    return "/".join([prefix, *type_.split(".")])


#: The ``source`` of every command, and the first level of a command's type and topic.
COMMAND = "command"
#: Who sends commands (docs/design.md, "Coordination strategies"): the orchestrator.
ORCHESTRATOR = "orchestrator"


def command_type(participant: str, action: str) -> str:
    """``payment`` + ``refund`` → ``command.payment.refund`` (topic ``{prefix}/command/payment/refund``).

    A command is a CloudEvent from :data:`ORCHESTRATOR` to one participant; its ``data`` carries
    the orchestrator's own state and version, like every event, and the domain fields the
    participant needs.
    """
    return f"{COMMAND}.{participant}.{action}"


def deadletter_topic(prefix: str, producer: str) -> str:
    """Where payloads that fail to parse or validate are republished (docs/design.md, "Events")."""
    return f"{prefix}/deadletter/{producer}"


def new_traceparent(parent: str | None = None) -> str:
    """A W3C traceparent continuing ``parent``'s trace (a fresh span), or a new trace."""
    trace_id = None
    if parent:
        parts = parent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            trace_id = parts[1]
    return f"00-{trace_id or os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def new_event(
    *,
    source: str,
    name: str,
    subject: str,
    state: str,
    version: int,
    domain: dict[str, Any] | None = None,
    cause: CloudEvent | None = None,
    time: str | None = None,
    type_: str | None = None,
) -> CloudEvent:
    """A new event from ``source``; trace context continues from ``cause`` when there is one.

    ``type_`` overrides the type ``{source}.{name}`` (a command's is :func:`command_type`).
    """
    return CloudEvent(
        specversion="1.0",
        id=str(uuid.uuid4()),
        source=source,
        type=type_ or event_type(source, name),
        subject=subject,
        time=time or utc_now(),
        # Tracing on: the span producing the event is its parent; off: the cause's trace goes on.
        traceparent=tracing.current_traceparent() or new_traceparent(cause.traceparent if cause else None),
        data=EventData(state=state, version=version, **(domain or {})),
    )


def parse_event(topic: str, payload: bytes, *, prefix: str, accepted: frozenset[str] | None) -> CloudEvent:
    """Parse and validate one MQTT message; raise :class:`InvalidEvent` with the reason.

    The topic must be ``{prefix}/{producer}/{event}`` (or a command's
    ``{prefix}/command/{participant}/{action}``, from the orchestrator), and the event's
    ``source`` and ``type`` must agree with it, so a payload cannot claim to come from another producer than its topic.
    ``accepted`` lists the types a consumer handles; ``None`` takes any type (a pure listener).
    """
    parts = topic.split("/")
    command = len(parts) == 4 and parts[1] == COMMAND
    if command:
        parts = [parts[0], parts[2], parts[3]]  # {prefix}/command/{participant}/{action}
    if len(parts) != 3 or parts[0] != prefix or not _NAME.fullmatch(parts[1]):
        raise InvalidEvent(f"topic is not {prefix}/{{producer}}/{{event}}", topic=topic)
    if len(payload) > MAX_EVENT_BYTES:
        raise InvalidEvent(
            f"payload of {len(payload)} bytes exceeds the {MAX_EVENT_BYTES} byte limit", topic=topic
        )
    try:
        raw = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"payload is not UTF-8: {exc.reason}", topic=topic) from exc
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"payload is not JSON: {exc.msg} at position {exc.pos}", topic=topic) from exc
    except (ValueError, RecursionError) as exc:
        # Valid JSON Python refuses: integers past the digit limit, nesting past the recursion limit.
        raise InvalidEvent(f"payload is not acceptable JSON: {type(exc).__name__}", topic=topic) from exc
    if not isinstance(raw, dict):
        raise InvalidEvent(f"payload is a JSON {type(raw).__name__}, not an object", topic=topic)
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"not a valid CloudEvent: {_errors(exc)}", topic=topic) from exc
    if accepted is not None and event.type not in accepted:
        raise InvalidEvent(f"unknown event type {event.type!r}", topic=topic)
    if not _NAME.fullmatch(parts[2]):
        raise InvalidEvent(f"topic is not {prefix}/{{producer}}/{{event}}", topic=topic)
    expected = command_type(parts[1], parts[2]) if command else event_type(parts[1], parts[2])
    if event.type != expected:
        raise InvalidEvent(f"type {event.type!r} does not match topic (expected {expected!r})", topic=topic)
    producer = ORCHESTRATOR if command else parts[1]
    if event.source != producer:
        raise InvalidEvent(f"source {event.source!r} does not match topic producer {producer!r}", topic=topic)
    return event


def _errors(exc: ValidationError) -> str:
    shown = [
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:5]
    ]
    more = exc.error_count() - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
