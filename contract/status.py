"""A participant's status body (docs/design.md, "Participant HTTP API"): one model for both sides.

Participants build their answers from :class:`StatusBody`; the aggregator parses answers with
the same field types and rules (in one pass, from bytes), so what is sent and what is accepted
cannot drift: on its read path as :class:`StatusRead` and :class:`BatchRead`, typed dicts that
cost less to build than models. Unknown fields are ignored, so a participant may add fields
without breaking aggregators.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    TypeAdapter,
    model_serializer,
)
from typing_extensions import TypedDict

from .ids import MAX_VERSION, WorkflowId

_Participant = Annotated[StrictStr, Field(min_length=1, max_length=64)]
_State = Annotated[StrictStr, Field(min_length=1, max_length=64)]
_Version = Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]
_At = Annotated[StrictStr, Field(max_length=64)]
_EventId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
_MAX_HISTORY = 10_000


class HistoryEntry(BaseModel):
    """One transition of a participant's local state."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: _State
    version: _Version
    at: _At
    event: _EventId | None = None
    """The id of the event this transition published, when it published one."""
    cause: _EventId | None = None
    """The id of the event that caused this transition; absent when a request started it."""

    @model_serializer(mode="wrap")
    def _absent_not_null(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``event`` and ``cause`` are left out, not null, when there is none."""
        body: dict[str, Any] = handler(self)
        for key in ("event", "cause"):
            if body.get(key) is None:
                body.pop(key, None)
        return body


class StatusBody(BaseModel):
    """``GET /status/{workflow_id}``: one participant's local part of a workflow."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    participant: _Participant
    workflow_id: WorkflowId
    state: _State
    version: _Version
    """Grows by one with every change of the local state."""
    updated_at: _At
    history: Annotated[list[HistoryEntry], Field(max_length=_MAX_HISTORY)] = []
    """Every transition, oldest first."""
    data: dict[str, Any] = {}
    """Domain fields of the participant's part."""


class BatchBody(BaseModel):
    """``GET /status?workflow_id=a&workflow_id=b``: the parts known, and the ids not known."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    statuses: list[StatusBody]
    missing: list[StrictStr] = []


class ListingBody(BaseModel):
    """``GET /status?state=S&updated_before=T&limit=N``: workflows in those states, oldest first."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    statuses: list[StatusBody]
    next: StrictStr | None = None
    """Pass as ``?after=`` for the next page; None on the last one."""


class RepublishBody(BaseModel):
    """``POST /outbox/{workflow_id}/republish``: how many events were published again."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    republished: Annotated[StrictInt, Field(ge=0)]


# -- the aggregator's reading of status answers ------------------------------------------


class _HistoryRead(TypedDict):
    state: _State
    version: _Version
    at: _At


class StatusRead(TypedDict):
    """:class:`StatusBody` as a reader validates it on a hot path: the same fields and rules, into
    plain dicts (no model instances to build). ``tests/unit/test_status.py`` checks that both
    accept and refuse the same bodies."""

    participant: _Participant
    workflow_id: WorkflowId
    state: _State
    version: _Version
    updated_at: _At
    history: NotRequired[Annotated[list[_HistoryRead], Field(max_length=_MAX_HISTORY)]]
    data: NotRequired[dict[str, Any]]


class BatchRead(TypedDict):
    """:class:`BatchBody`, read as :class:`StatusRead` is."""

    statuses: list[StatusRead]
    missing: NotRequired[list[StrictStr]]


STATUS_READ: TypeAdapter[StatusRead] = TypeAdapter(StatusRead)
"""Validates a status answer (bytes) into a :class:`StatusRead`."""
BATCH_READ: TypeAdapter[BatchRead] = TypeAdapter(BatchRead)
"""Validates a batch answer (bytes) into a :class:`BatchRead`."""
