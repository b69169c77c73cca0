"""The JSON bodies of the aggregator's HTTP API, as typed dictionaries pydantic serialises and describes.

:meth:`View.to_json` builds a :class:`ViewBody` (mypy checks every key), :data:`VIEW` encodes it
(pydantic-core: about three times faster than ``json.dumps``), and ``/openapi.json`` takes its
schemas from the same types (:func:`component_schemas`), so the document and the answers
cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

#: How a read got a part; `store` is what a coordinator (orchestrator, front controller) keeps itself.
Source = Literal["live", "cache", "event", "stale", "none", "store"]
FailureKind = Literal["timeout", "unavailable", "circuit_open", "bad_response", "unmapped_state"]
#: Why a stalled workflow is not moving (:class:`StallBody`).
StallReason = Literal["no_progress", "part_unavailable", "anomaly", "unmapped"]
#: A redrive job's state, and the outcome of one workflow in it (:mod:`aggregator._jobs`).
JobState = Literal["running", "done", "cancelled"]
RedriveResult = Literal["republished", "nothing_to_republish", "failed", "selected"]


class PartBody(TypedDict):
    """One participant's part of a workflow view."""

    state: Annotated[str | None, Field(description="The local state; null: no record, or not reached")]
    version: Annotated[int | None, Field(description="Grows by one per change; null without a state")]
    updated_at: Annotated[str | None, Field(description="When the participant changed it (RFC 3339)")]
    observed_at: Annotated[
        str | None, Field(description="When the aggregator asked for it, or the event's time")
    ]
    source: Annotated[Source, Field(description="How this read got the part")]
    latency_ms: Annotated[float | None, Field(description="The participant call's latency (live parts)")]
    error: Annotated[FailureKind | None, Field(description="Why the part is missing or stale")]
    detail: NotRequired[
        Annotated[str, Field(description="What a mapped participant's answer lacks (with `error`)")]
    ]
    data: NotRequired[
        Annotated[dict[str, Any], Field(description="What a mapped participant's `data` selector found")]
    ]
    ordered: NotRequired[
        Annotated[
            Literal[False],
            Field(
                description="Present (false) for a mapped part with neither version nor time: "
                "reads of it are not monotonic"
            ),
        ]
    ]
    clock_offset_ms: NotRequired[
        Annotated[
            float,
            Field(
                description="Present when the participant's clock is measured off the aggregator's: "
                "how far ahead it is (negative: behind); `updated_at` stays as the participant wrote it, "
                "and `stalled` and `step` use it corrected"
            ),
        ]
    ]


class AnomalyBody(TypedDict):
    """An ordering the parts violate: a transition in flight, or a stale part."""

    kind: Literal["ordering"]
    part: str
    requires: str
    detail: str


class StallBody(TypedDict):
    """Why a stalled workflow is not moving, and since when."""

    since: Annotated[
        str,
        Field(
            description="When its newest part changed (RFC 3339, in the aggregator's clock: corrected "
            "for the participants' measured clock offsets)"
        ),
    ]
    waiting_for: Annotated[
        list[str],
        Field(
            description="The participants it waits on: those whose parts could not be read or mapped "
            "(`part_unavailable`, `unmapped`), those an ordering still needs (`anomaly`), else the "
            "step the matching rule names, or the required parts with no record"
        ),
    ]
    reason: Annotated[
        StallReason,
        Field(
            description="`unmapped`: a part's state has no mapping; `part_unavailable`: a required "
            "part could not be read; `anomaly`: an ordering is still violated past the stall time; "
            "`no_progress`: every part answered and nothing moved"
        ),
    ]


class ViewBody(TypedDict):
    """``GET /workflows/{workflow_id}``: the workflow reconstructed from its parts."""

    workflow_id: str
    workflow: Annotated[str, Field(description="The definition's name")]
    state: Annotated[str, Field(description="Derived by the definition's first matching rule")]
    step: Annotated[
        str | None,
        Field(description="The participant the workflow waits on; null once it is in a terminal state"),
    ]
    complete: Annotated[bool, Field(description="Every required part answered without error")]
    parts: dict[str, PartBody]
    staleness_ms: Annotated[
        int, Field(ge=0, description="An upper bound on how far behind the view may be, in milliseconds")
    ]
    anomalies: list[AnomalyBody]
    generated_at: str
    stalled: Annotated[
        bool,
        Field(
            description="Not in a terminal state, and no part changed for the definition's "
            "`stall_after_ms`: the workflow may be stuck (see redrive)"
        ),
    ]
    stall: Annotated[
        StallBody | None, Field(description="Why and since when it is stalled; null when it is not")
    ]
    min_version_unmet: NotRequired[
        Annotated[
            dict[str, int],
            Field(
                description="Present when a `min_version` was asked and not reached by the deadline: "
                "participant → the version asked (the view is then not complete)"
            ),
        ]
    ]


class ViewsBody(TypedDict):
    """``GET /workflows?id=…``: the views found, and the ids no participant knows."""

    views: list[ViewBody]
    not_found: list[str]


class StalledBody(TypedDict):
    """``GET /workflows?stalled=true``: the stalled workflows' views, oldest first."""

    views: list[ViewBody]


class FleetPageBody(TypedDict):
    """``GET /workflows?state=…``: one page of the in-flight workflows in those states, oldest first."""

    views: list[ViewBody]
    next: Annotated[
        str | None,
        Field(
            description="The cursor of the next page (pass it as `cursor`); null once the listing is through"
        ),
    ]
    scanned: Annotated[int, Field(ge=0, description="Listed workflows this page went through")]
    budget_exhausted: Annotated[
        bool,
        Field(
            description="The page ended on its scan budget (workflows looked at, or time), not on "
            "`limit` or the end of the data: follow `next` for more"
        ),
    ]


class SummaryBody(TypedDict):
    """``GET /summary``: in-flight workflows counted by derived state."""

    counts: Annotated[dict[str, int], Field(description="Derived state → how many (every state shown)")]
    scanned: Annotated[int, Field(ge=0, description="Listed workflows looked at")]
    complete: Annotated[
        bool,
        Field(
            description="The initiator's listing was gone through to its end (false: the scan budget ended it)"
        ),
    ]


class TimelineEntryBody(TypedDict):
    """One transition of one participant's part."""

    participant: str
    state: str
    version: Annotated[int | None, Field(description="null for a mapped participant without versions")]
    at: Annotated[str, Field(description="When the participant committed it (RFC 3339), by its own clock")]
    source: Annotated[Source, Field(description="How this read got the entry (`live`: asked for it)")]
    event: NotRequired[Annotated[str, Field(description="The id of the event this transition published")]]
    cause: NotRequired[
        Annotated[
            str,
            Field(description="The id of the event that caused it (absent: a request started it)"),
        ]
    ]
    clock_offset_ms: NotRequired[
        Annotated[
            float,
            Field(
                description="Present when the participant's clock is measured off the aggregator's: "
                "how far ahead it is; the entry is placed by `at` corrected by it"
            ),
        ]
    ]


class TimelineBody(TypedDict):
    """``GET /workflows/{workflow_id}/timeline``: every participant's history merged, no entry
    before its cause, then by time corrected for the participants' clock offsets."""

    workflow_id: str
    entries: list[TimelineEntryBody]
    errors: Annotated[
        dict[str, FailureKind],
        Field(description="Participants that could not be asked (their entries are missing) → why"),
    ]


class RedriveStartedBody(TypedDict):
    """``POST /redrives``: the job started."""

    id: str
    cutoff: Annotated[
        str,
        Field(
            description="The job's creation time: only workflows whose newest part changed before it are taken"
        ),
    ]
    state: JobState


class RedriveResultBody(TypedDict):
    """One workflow's outcome in a redrive job."""

    workflow_id: str
    result: Annotated[
        RedriveResult,
        Field(
            description="`republished`: some participant published its events again; `nothing_to_republish`: "
            "every participant answered with none; `failed`: a participant could not be asked "
            "(`detail` says which and why); `selected`: a dry run's pick, not redriven"
        ),
    ]
    detail: Annotated[str, Field(description="What each participant republished, or why it failed")]


class RedriveJobSummaryBody(TypedDict):
    """A redrive job's request and progress, without its results."""

    id: str
    state: Annotated[
        JobState, Field(description="`cancelled` by DELETE; `done` once every selected workflow was tried")
    ]
    cutoff: str
    finished: str | None
    dry_run: bool
    rate_per_s: float
    max: int
    filter: Annotated[dict[str, Any] | None, Field(description="As given (null when ids were given)")]
    ids: Annotated[int | None, Field(description="How many ids were given (null for a filter)")]
    selected: Annotated[int, Field(ge=0, description="Workflows taken so far (at most `max`)")]
    done: Annotated[int, Field(ge=0, description="Workflows redriven (or, in a dry run, listed) so far")]
    failed: Annotated[int, Field(ge=0, description="Of those, the ones that failed")]
    skipped: Annotated[
        int, Field(ge=0, description="Ids given that no participant knows, or that changed after the cutoff")
    ]
    error: Annotated[
        str | None, Field(description="Why the selection stopped early (the initiator failed), if it did")
    ]


class RedriveJobBody(RedriveJobSummaryBody):
    """``GET /redrives/{id}``: a redrive job with its results so far."""

    results: list[RedriveResultBody]


class RedriveJobsBody(TypedDict):
    """``GET /redrives``: the jobs kept, newest first (a restart forgets them)."""

    jobs: list[RedriveJobSummaryBody]


VIEW: TypeAdapter[ViewBody] = TypeAdapter(ViewBody)
VIEWS: TypeAdapter[ViewsBody] = TypeAdapter(ViewsBody)
STALLED: TypeAdapter[StalledBody] = TypeAdapter(StalledBody)
TIMELINE: TypeAdapter[TimelineBody] = TypeAdapter(TimelineBody)
FLEET_PAGE: TypeAdapter[FleetPageBody] = TypeAdapter(FleetPageBody)
SUMMARY: TypeAdapter[SummaryBody] = TypeAdapter(SummaryBody)
REDRIVE_STARTED: TypeAdapter[RedriveStartedBody] = TypeAdapter(RedriveStartedBody)
REDRIVE_JOB: TypeAdapter[RedriveJobBody] = TypeAdapter(RedriveJobBody)
REDRIVE_JOBS: TypeAdapter[RedriveJobsBody] = TypeAdapter(RedriveJobsBody)

#: How the bodies are named in ``/openapi.json``'s components.
_NAMES = {
    "ViewBody": "View",
    "PartBody": "Part",
    "AnomalyBody": "Anomaly",
    "StallBody": "Stall",
    "ViewsBody": "Views",
    "StalledBody": "Stalled",
    "TimelineBody": "Timeline",
    "TimelineEntryBody": "TimelineEntry",
    "FleetPageBody": "FleetPage",
    "SummaryBody": "Summary",
    "RedriveStartedBody": "RedriveStarted",
    "RedriveResultBody": "RedriveResult",
    "RedriveJobSummaryBody": "RedriveJobSummary",
    "RedriveJobBody": "RedriveJob",
    "RedriveJobsBody": "RedriveJobs",
}


def component_schemas() -> dict[str, Any]:
    """JSON schemas of the bodies, keyed by component name, referring to each other as OpenAPI does."""
    found: dict[str, Any] = {}
    bodies = (
        ("ViewBody", VIEW),
        ("ViewsBody", VIEWS),
        ("StalledBody", STALLED),
        ("TimelineBody", TIMELINE),
        ("FleetPageBody", FLEET_PAGE),
        ("SummaryBody", SUMMARY),
        ("RedriveStartedBody", REDRIVE_STARTED),
        ("RedriveJobBody", REDRIVE_JOB),
        ("RedriveJobsBody", REDRIVE_JOBS),
    )
    for name, adapter in bodies:
        schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
        found.update(schema.pop("$defs", {}))
        found[name] = schema
    text = json.dumps(found)
    for old, new in _NAMES.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    return {_NAMES.get(name, name): schema for name, schema in json.loads(text).items()}
