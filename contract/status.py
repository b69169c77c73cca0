"""A participant's status body (docs/design.md, "Participant HTTP API"): one model for both sides.

Participants build their answers from :class:`StatusBody`; the aggregator parses answers with
the same model (in one pass, from bytes), so what is sent and what is accepted cannot drift.
Unknown fields are ignored, so a participant may add fields without breaking aggregators.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .ids import MAX_VERSION, WorkflowId

_State = Annotated[StrictStr, Field(min_length=1, max_length=64)]


class HistoryEntry(BaseModel):
    """One transition of a participant's local state."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    state: _State
    version: Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]
    at: Annotated[StrictStr, Field(max_length=64)]


class StatusBody(BaseModel):
    """``GET /status/{workflow_id}``: one participant's local part of a workflow."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    participant: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    workflow_id: WorkflowId
    state: _State
    version: Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]
    """Grows by one with every change of the local state."""
    updated_at: Annotated[StrictStr, Field(max_length=64)]
    history: Annotated[list[HistoryEntry], Field(max_length=10_000)] = []
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
