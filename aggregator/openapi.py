"""The OpenAPI 3.1 document of the aggregator's HTTP API: paths written here, bodies from :mod:`aggregator.schema`.

The document says what the server does: the parameter patterns are the ones the server
enforces, every error a route can give is listed, and with auth on every route but the health
probes requires the bearer scheme.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from contract import PROBLEM_SCHEMA, WORKFLOW_ID_PATTERN

from . import _jobs as jobs
from . import _scans as scans
from ._fleet import CURSOR_PATTERN, MAX_LIMIT, MAX_STATES, MAX_TIME_LENGTH, derived_states
from .definition import Definition
from .options import MAX_BATCH, MAX_TIMEOUT_MS
from .schema import component_schemas

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _busy(what: str, size: int) -> dict[str, Any]:
    """The 429 of a route that runs at most ``size`` at once (:mod:`aggregator._scans`)."""
    return {
        "description": f"{size} {what} were running (the most at once per aggregator) and none ended "
        f"within {scans.WAIT_S:g} s",
        "headers": {
            "Retry-After": {
                "description": "Seconds until the oldest one running reaches its time budget (at least 1)",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _time(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "date-time", "maxLength": MAX_TIME_LENGTH, "description": description}


def _fleet_query(definition: Definition) -> dict[str, Any]:
    """``GET /workflows?state=…``'s query: the states, and the filters and page of a fleet query."""
    state = {"type": "string", "enum": derived_states(definition)}
    return {
        "title": "Query",
        "type": "object",
        "properties": {
            # One `state=A` reads the same as a list of one: a query cannot tell them apart.
            "state": {
                "anyOf": [state, {"type": "array", "minItems": 1, "maxItems": MAX_STATES, "items": state}],
                "description": "The derived states wanted (repeat the parameter); any other is a 400",
            },
            "step": {
                "type": "string",
                "enum": sorted(definition.participants),
                "description": "Only workflows waiting on this participant",
            },
            "updated_before": _time("Only workflows whose newest part changed before this RFC 3339 time"),
            "updated_after": _time("Only workflows whose newest part changed after this RFC 3339 time"),
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "description": "Views per page, at most (100)",
            },
            "cursor": {
                "type": "string",
                "pattern": CURSOR_PATTERN,
                "description": "The `next` of the previous page, unchanged (a changed or made-up one is a 400)",
            },
        },
        "required": ["state"],
        "additionalProperties": False,
    }


def _redrive_request(definition: Definition) -> dict[str, Any]:
    """``POST /redrives``'s body: a filter (``stalled``, or a fleet query's filters) or ids, not both."""
    query = _fleet_query(definition)
    fleet_filter = {
        "title": "QueryFilter",
        "type": "object",
        "properties": {k: v for k, v in query["properties"].items() if k in jobs.FILTER_KEYS},
        "required": ["state"],
        "additionalProperties": False,
    }
    stalled_filter = {
        "title": "StalledFilter",
        "type": "object",
        "properties": {"stalled": {"const": True}},
        "required": ["stalled"],
        "additionalProperties": False,
    }
    common = {
        "dry_run": {"type": "boolean", "description": "Select and list, redrive nothing (false)"},
        "rate_per_s": {
            "type": "number",
            "minimum": 0.01,
            "maximum": jobs.MAX_RATE_PER_S,
            "description": f"Workflows redriven a second, at most ({jobs.DEFAULT_RATE_PER_S:g}); "
            "each participant gets at most as many republish requests a second",
        },
        "max": {
            "type": "integer",
            "minimum": 1,
            "maximum": jobs.MAX_WORKFLOWS,
            "description": f"Workflows taken, at most ({jobs.DEFAULT_MAX})",
        },
    }
    by_filter = {
        "title": "ByFilter",
        "type": "object",
        "properties": {"filter": {"oneOf": [stalled_filter, fleet_filter]}, **common},
        "required": ["filter"],
        "additionalProperties": False,
    }
    by_ids = {
        "title": "ByIds",
        "type": "object",
        "properties": {
            "ids": {
                "type": "array",
                "minItems": 1,
                "maxItems": jobs.MAX_IDS,
                "items": {"type": "string", "pattern": WORKFLOW_ID_PATTERN},
            },
            **common,
        },
        "required": ["ids"],
        "additionalProperties": False,
    }
    return {"oneOf": [by_filter, by_ids]}


def _workflows_query(read_params: list[dict[str, Any]], definition: Definition) -> dict[str, Any]:
    """``GET /workflows``'s query: ids (a batch), ``stalled=true`` or ``state=…`` (a fleet query),
    one of the three.

    One exploded object parameter, so the document can say so (``oneOf``); any other
    parameter is a 400.
    """
    timeout_ms, _, min_version = read_params
    reads = {"timeout_ms": timeout_ms["schema"], "min_version": min_version["schema"]}
    batch = {
        "title": "Batch",
        "type": "object",
        "properties": {
            # One `id=a` reads the same as a list of one: a query cannot tell them apart.
            "id": {
                "anyOf": [
                    {"type": "string", "pattern": WORKFLOW_ID_PATTERN},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                        "items": {"type": "string", "pattern": WORKFLOW_ID_PATTERN},
                    },
                ],
                "description": "The workflows to view (repeat the parameter)",
            },
            **reads,
        },
        "required": ["id"],
        "not": {"required": ["stalled"]},
        "additionalProperties": False,
    }
    stalled = {
        "title": "Stalled",
        "type": "object",
        "properties": {
            "stalled": {"type": "string", "enum": ["true"], "description": "List stalled workflows"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "At most (100)"},
        },
        "required": ["stalled"],
        "not": {"required": ["id"]},
        "additionalProperties": False,
    }
    return {
        "name": "query",
        "in": "query",
        "required": True,
        "style": "form",
        "explode": True,
        "schema": {"oneOf": [batch, stalled, _fleet_query(definition)]},
        "description": "`id=a&id=b` (with `timeout_ms`, `min_version`), `stalled=true` (with `limit`), "
        "or `state=S` (with `step`, `updated_before`, `updated_after`, `limit`, `cursor`)",
    }


def openapi_document(definition: Definition, *, auth: bool = False) -> dict[str, Any]:
    """What ``GET /openapi.json`` serves (``auth``: whether a bearer token is required)."""
    workflow_id = {
        "name": "workflow_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": WORKFLOW_ID_PATTERN},
    }
    read_params: list[dict[str, Any]] = [
        {
            "name": "timeout_ms",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS},
            "description": f"Shortens the request deadline (default {definition.settings.deadline_ms} ms).",
        },
        {
            "name": "Cache-Control",
            "in": "header",
            "schema": {"type": "string"},
            "description": "`max-age=N`: parts older than N s are refetched; `no-cache`: all are refetched.",
        },
        {
            "name": "min_version",
            "in": "query",
            "schema": _min_version_schema(definition),
            "description": "PARTICIPANT:VERSION, repeatable: wait within the deadline for that version "
            "(only participants whose parts carry a version; a mapped one without `version` has none).",
        },
    ]

    def operation(
        summary: str,
        responses: dict[str, Any],
        *,
        params: Any = (),
        open_: bool = False,
        method: str = "get",
        body: dict[str, Any] | None = None,
    ) -> Any:
        op: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        if params:
            op["parameters"] = list(params)
        if auth and not open_:
            op["security"] = _BEARER
            op["responses"]["401"] = _PROBLEM
        return {method: op}

    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/workflows/{workflow_id}": operation(
            "The workflow reconstructed from its participants' parts",
            {
                "200": {
                    **_json("View", "The view (possibly partial: see `complete` and each part's `error`)"),
                    "headers": {
                        "ETag": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string"}},
                    },
                },
                "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                "400": _PROBLEM,
                "404": _PROBLEM,
                "503": _PROBLEM,
            },
            params=[
                workflow_id,
                *read_params,
                {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
            ],
        ),
        "/workflows/{workflow_id}/watch": operation(
            "Server-Sent Events: the view now, then a `view` event per change",
            {
                "200": {"description": "text/event-stream", "content": {"text/event-stream": {}}},
                "400": _PROBLEM,
                "503": _PROBLEM,
            },
            params=[workflow_id, *read_params],
        ),
        "/workflows": operation(
            "Several views (each participant asked once, through its batch endpoint), "
            "with `stalled=true` the stalled workflows, or with `state=S` a page of the in-flight "
            "workflows in those states (found through the initiator's listing, bounded by a scan budget; "
            f"{scans.MAX_PAGES} such pages and stalled lists at once at most)",
            {
                "200": {
                    "description": "A batch: the views found, and the ids no participant knows "
                    "(`Views`); `stalled=true`: the stalled workflows' views, oldest first (`Stalled`); "
                    "`state=S`: a page of views, the next page's cursor, and what bounded it (`FleetPage`)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    {"$ref": "#/components/schemas/Views"},
                                    {"$ref": "#/components/schemas/Stalled"},
                                    {"$ref": "#/components/schemas/FleetPage"},
                                ]
                            }
                        }
                    },
                },
                "400": _PROBLEM,
                "429": _busy("fleet pages (`state=S`) or stalled lists (`stalled=true`)", scans.MAX_PAGES),
                "501": _PROBLEM,
                "503": _PROBLEM,
            },
            params=[_workflows_query(read_params, definition), read_params[1]],
        ),
        "/summary": operation(
            "The in-flight workflows (through the initiator's listing) counted by derived state, "
            "bounded by a scan budget; `complete` says whether the count is whole "
            f"({scans.MAX_SUMMARIES} summaries at once at most)",
            {
                "200": _json("Summary", "The counts"),
                "400": _PROBLEM,
                "429": _busy("summaries", scans.MAX_SUMMARIES),
                "501": _PROBLEM,
                "503": _PROBLEM,
            },
            params=[
                {
                    "name": "updated_after",
                    "in": "query",
                    "schema": _time(
                        "Count only workflows whose newest part changed after this RFC 3339 time"
                    ),
                }
            ],
        ),
        "/workflows/{workflow_id}/timeline": operation(
            "Every participant's history of the workflow (asked live), merged and ordered by time",
            {
                "200": _json("Timeline", "The entries; participants that could not be asked are in `errors`"),
                "400": _PROBLEM,
                "404": _PROBLEM,
                "503": _PROBLEM,
            },
            params=[workflow_id],
        ),
        "/workflows/{workflow_id}/redrive": operation(
            "Ask every participant to republish the workflow's events (original ids)",
            {
                "202": {
                    "description": "What each participant answered",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "workflow_id": {"type": "string"},
                                    "participants": {
                                        "type": "object",
                                        "additionalProperties": {
                                            "type": "object",
                                            "properties": {
                                                "republished": {"type": "integer", "minimum": 0},
                                                "error": {"type": "string"},
                                                "detail": {"type": "string"},
                                                "skipped": {
                                                    "type": "string",
                                                    "description": "Why it was not asked (read through a "
                                                    "mapping: it has no republish endpoint)",
                                                },
                                            },
                                        },
                                    },
                                },
                                "required": ["workflow_id", "participants"],
                            }
                        }
                    },
                },
                "400": _PROBLEM,
                "503": _PROBLEM,
            },
            params=[workflow_id],
            method="post",
        ),
        "/redrives": {
            **operation(
                "Start a redrive job: the workflows a filter (or a list of ids) selects, last changed "
                "before the job's creation (its `cutoff`), redriven at `rate_per_s` at most; jobs live "
                f"in memory ({jobs.MAX_RUNNING} running, {jobs.MAX_JOBS} kept) and a restart forgets them",
                {
                    "202": {
                        **_json("RedriveStarted", "The job started; follow it at its `Location`"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "400": _PROBLEM,
                    "429": _PROBLEM,
                    "501": _PROBLEM,
                    "503": _PROBLEM,
                },
                method="post",
                body=_redrive_request(definition),
            ),
            **operation(
                "The redrive jobs kept, newest first, without their results",
                {"200": _json("RedriveJobs", "The jobs"), "400": _PROBLEM, "503": _PROBLEM},
            ),
        },
        "/redrives/{job_id}": {
            **operation(
                "A redrive job's progress and its results so far",
                {"200": _json("RedriveJob", "The job"), "404": _PROBLEM, "503": _PROBLEM},
                params=[job_id],
            ),
            **operation(
                "Cancel a redrive job: it stops at once, its results so far are kept",
                {
                    "202": _json("RedriveJob", "The job, cancelled (or as it ended)"),
                    "404": _PROBLEM,
                    "503": _PROBLEM,
                },
                params=[job_id],
                method="delete",
            ),
        },
        "/ui/": operation(
            "The status page: look a workflow up and follow it (`/ui/?id=ID` opens one), the workflows in "
            "flight counted and listed by state, step and age, the stalled ones grouped by reason and "
            "redriven as a job with live progress; its API calls need the token, the page does not",
            {"200": {"description": "The page", "content": {"text/html": {}}}},
            open_=True,
        ),
        "/ui": operation("To the status page", {"302": {"description": "`Location: ui/`"}}, open_=True),
        "/ui/{name}": operation(
            "The status page's own files (`app.js`, `style.css`, `index.html`)",
            {
                "200": {
                    "description": "The file",
                    "content": {"text/javascript": {}, "text/css": {}, "text/html": {}},
                },
                "404": _PROBLEM,
            },
            params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            open_=True,
        ),
        "/healthz": operation(
            "Alive; `clock_offset_ms` gives each participant's measured clock offset (its clock minus "
            "the aggregator's; null until measured)",
            {"200": {"description": "ok"}},
            open_=True,
        ),
        "/readyz": operation(
            "Ready (`degraded` while the event feed is down)",
            {"200": {"description": "ready or degraded"}, "503": _PROBLEM},
            open_=True,
        ),
        "/metrics": operation(
            "Prometheus metrics",
            {"200": {"description": "text exposition", "content": {"text/plain": {}}}},
        ),
        "/openapi.json": operation(
            "This document", {"200": {"description": "OpenAPI", "content": {"application/json": {}}}}
        ),
    }
    components: dict[str, Any] = {
        "schemas": component_schemas(),
        "responses": {
            "Problem": {
                "description": "RFC 9457 problem details",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
        },
    }
    components["schemas"]["Problem"] = copy.deepcopy(dict(PROBLEM_SCHEMA))
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Workflow status aggregator: {definition.name}", "version": "0.1.0"},
        "paths": paths,
        "components": components,
    }


def _min_version_schema(definition: Definition) -> dict[str, Any]:
    """``min_version``: PARTICIPANT:VERSION of the participants whose parts carry a version; none
    at all when no participant's do."""
    versioned = sorted(definition.versioned())
    if not versioned:
        return {"type": "array", "maxItems": 0}
    names = "|".join(re.escape(name) for name in versioned)
    return {"type": "array", "items": {"type": "string", "pattern": f"^({names}):[0-9]{{1,18}}$"}}
