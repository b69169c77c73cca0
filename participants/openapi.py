"""The OpenAPI 3.1 document a participant serves at ``GET /openapi.json`` (docs/design.md, "Participants").

The framework describes its own routes here (status, batch status and listing, outbox
republish, health, readiness, metrics and this document); a spec's own routes come from its :class:`~participants.spec.OpenAPIPaths`. Bodies
are the contract's models' JSON Schemas, so the document cannot drift from what is sent.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from contract import PROBLEM_JSON, PROBLEM_SCHEMA, WORKFLOW_ID_PATTERN, BatchBody, ListingBody, RepublishBody

from ._listing import CURSOR_PATTERN, DEFAULT_PAGE, MAX_STATES, MAX_TIME_LENGTH, STATE_PATTERN
from .spec import OpenAPIPaths

#: The document's security scheme, when authentication is on.
BEARER = "bearer"
#: Paths served without authentication whatever the configuration.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Paths whose answers ``--latency-ms``/``--error-rate`` delay or fail.
FAULTY_PATHS = frozenset({"/status/{workflow_id}", "/status"})
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

SCHEMA_REF = "#/components/schemas/{model}"
"""``ref_template`` for ``model_json_schema``: refs that resolve in this document."""


def problem_response(description: str) -> dict[str, Any]:
    """An error answer: RFC 9457 problem details."""
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def json_response(description: str, schema: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A success answer with an ``application/json`` body."""
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}, **extra}


def schema_with_defs(schema: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pydantic JSON Schema made with :data:`SCHEMA_REF`, split into itself and its ``$defs``."""
    own = dict(schema)
    return own, dict(own.pop("$defs", {}))


def _status_query(workflow_id: dict[str, Any], max_batch: int, max_page: int) -> dict[str, Any]:
    """``GET /status``'s query: the batch form or the listing form, never both, never neither.

    One exploded object parameter, so that the document can say what the server enforces: the
    two forms exclude each other (``oneOf``) and take nothing else (``additionalProperties``).
    """
    batch = {
        "title": "Batch",
        "type": "object",
        "properties": {
            "workflow_id": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_batch,
                "items": workflow_id,
                "description": "The workflows whose parts to answer (repeat the parameter)",
            }
        },
        "required": ["workflow_id"],
        "additionalProperties": False,
    }
    listing = {
        "title": "Listing",
        "type": "object",
        "properties": {
            "state": {
                "type": "array",
                "maxItems": MAX_STATES,
                "items": {"type": "string", "pattern": STATE_PATTERN},
                "description": "Only workflows in one of these local states (repeat the parameter); any if absent",
            },
            "updated_before": {
                "type": "string",
                "format": "date-time",
                "maxLength": MAX_TIME_LENGTH,
                "description": "Only workflows whose local state last changed before this RFC 3339 time",
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": max_page,
                "default": DEFAULT_PAGE,
                "description": "Most workflows on the page",
            },
            "after": {
                "type": "string",
                "pattern": CURSOR_PATTERN,
                "description": "Opaque: the `next` of the previous page",
            },
        },
        # At least one of them: a query with none is neither form (a 400).
        "anyOf": [
            {"required": ["state"], "properties": {"state": {"minItems": 1}}},
            {"required": ["updated_before"]},
            {"required": ["limit"]},
            {"required": ["after"]},
        ],
        "additionalProperties": False,
    }
    return {
        "name": "query",
        "in": "query",
        "required": True,
        "style": "form",
        "explode": True,
        "description": "Either `workflow_id=a&workflow_id=b` (batch) or any of `state`, `updated_before`, "
        "`limit`, `after` (listing); not both, and no other parameter",
        "schema": {"oneOf": [batch, listing]},
    }


def _framework_paths(max_batch: int, max_page: int) -> dict[str, Any]:
    workflow_id = {"type": "string", "pattern": WORKFLOW_ID_PATTERN}
    return {
        "/status/{workflow_id}": {
            "get": {
                "operationId": "getStatus",
                "summary": "This participant's local part of one workflow",
                "parameters": [
                    {"name": "workflow_id", "in": "path", "required": True, "schema": workflow_id}
                ],
                "responses": {
                    "200": json_response("The local part", {"$ref": "#/components/schemas/StatusBody"}),
                    "400": problem_response("The workflow id does not match the pattern"),
                    "404": problem_response("This participant has no record of the workflow"),
                },
            }
        },
        "/status": {
            "get": {
                "operationId": "getStatuses",
                "summary": "The local parts of several workflows (batch), or a page of those held (listing)",
                "description": "Batch: the parts known, in request order, and the ids not known under "
                "`missing`. Listing: the workflows this participant holds in those states, updated "
                "before that time, oldest first by `updated_at` then `workflow_id`; `next` is the "
                "cursor of the next page (`after`), null on the last.",
                "parameters": [_status_query(workflow_id, max_batch, max_page)],
                "responses": {
                    "200": json_response(
                        "A `BatchBody` (batch form) or a `ListingBody` (listing form)",
                        {
                            "anyOf": [
                                {"$ref": "#/components/schemas/BatchBody"},
                                {"$ref": "#/components/schemas/ListingBody"},
                            ]
                        },
                    ),
                    "400": problem_response(
                        f"Neither form or both, an unknown parameter, no id or more than {max_batch} "
                        "ids or an invalid one, or an invalid state, time, limit or cursor"
                    ),
                },
            }
        },
        "/outbox/{workflow_id}/republish": {
            "post": {
                "operationId": "republishOutbox",
                "summary": "Publish again, with their original ids, the events this participant produced "
                "for the workflow (redrive a stalled one; consumers drop what they already applied)",
                "parameters": [
                    {"name": "workflow_id", "in": "path", "required": True, "schema": workflow_id}
                ],
                "responses": {
                    "202": json_response(
                        "Queued for publishing: how many events (0 if none is kept for that workflow)",
                        {"$ref": "#/components/schemas/RepublishBody"},
                    ),
                    "400": problem_response("The workflow id does not match the pattern"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Alive, with counters since the process started",
                "responses": {
                    "200": json_response(
                        "Alive",
                        {
                            "type": "object",
                            "properties": {
                                "status": {"const": "ok"},
                                "participant": {"type": "string"},
                                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                            },
                            "required": ["status", "participant", "counts"],
                        },
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Ready: database open and broker connected",
                "responses": {
                    "200": json_response(
                        "Ready",
                        {
                            "type": "object",
                            "properties": {
                                "status": {"const": "ready"},
                                "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
                            },
                            "required": ["status", "checks"],
                        },
                    ),
                    "503": problem_response("Not ready; `checks` says what is unavailable"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics: the counters of /healthz as participant_*_total, "
                "the outbox backlog, the broker link and the process (process_*)",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition (`text/plain; version=0.0.4`)",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": json_response("The OpenAPI 3.1 document", {"type": "object"})},
            }
        },
    }


def openapi_document(
    name: str,
    extra: OpenAPIPaths | None = None,
    *,
    max_batch: int,
    max_page: int,
    auth: bool,
    injected_failures: bool = False,
) -> dict[str, Any]:
    """What participant ``name`` serves at ``GET /openapi.json``.

    ``extra`` is its spec's own routes; ``auth`` adds the bearer scheme, and a ``security``
    requirement and a 401 answer to every operation but ``/healthz`` and ``/readyz``;
    ``injected_failures`` (``--error-rate`` above 0) adds the status routes' 503 answer.
    """
    schemas: dict[str, Any] = {"Problem": copy.deepcopy(dict(PROBLEM_SCHEMA))}
    for model in (BatchBody, ListingBody, RepublishBody):
        own, defs = schema_with_defs(model.model_json_schema(ref_template=SCHEMA_REF))
        schemas.update({model.__name__: own, **defs})
    paths = _framework_paths(max_batch, max_page)
    if extra is not None:
        clash = set(extra.paths) & set(paths) or set(extra.schemas) & set(schemas)
        if clash:
            raise ValueError(f"{name}: the spec's OpenAPI paths redefine {sorted(clash)}")
        paths.update({p: dict(item) for p, item in extra.paths.items()})
        schemas.update(extra.schemas)
    for path, item in paths.items():
        for method in _METHODS:
            if (operation := item.get(method)) is None:
                continue
            operation = item[method] = {**operation, "responses": dict(operation["responses"])}
            if injected_failures and path in FAULTY_PATHS:
                operation["responses"]["503"] = problem_response("Injected failure (--error-rate)")
            if auth and path not in OPEN_PATHS:
                operation["security"] = [{BEARER: []}]
                operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
    components: dict[str, Any] = {"schemas": schemas}
    if auth:
        components["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer"}}
        components["responses"] = {
            "Unauthorized": {
                **problem_response("No valid `Authorization: Bearer` token"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Saga participant: {name}", "version": "0.1.0"},
        "paths": paths,
        "components": components,
    }
