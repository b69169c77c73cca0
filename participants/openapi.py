"""The OpenAPI 3.1 document a participant serves at ``GET /openapi.json`` (docs/design.md, "Participants").

The framework describes its own routes here (status, batch status, health, readiness and this
document); a spec's own routes come from its :class:`~participants.spec.OpenAPIPaths`. Bodies
are the contract's models' JSON Schemas, so the document cannot drift from what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract import PROBLEM_JSON, WORKFLOW_ID_PATTERN, BatchBody

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


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; extension members (errors, workflow_id, ...) may follow.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}


def _framework_paths(max_batch: int) -> dict[str, Any]:
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
                "summary": "The local parts of several workflows (batch)",
                "parameters": [
                    {
                        "name": "workflow_id",
                        "in": "query",
                        "required": True,
                        "style": "form",
                        "explode": True,
                        "schema": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_batch,
                            "items": workflow_id,
                        },
                    }
                ],
                "responses": {
                    "200": json_response(
                        "The parts known, in request order, and the ids not known under `missing`",
                        {"$ref": "#/components/schemas/BatchBody"},
                    ),
                    "400": problem_response(f"No id, more than {max_batch} ids, or an invalid id"),
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
    auth: bool,
    injected_failures: bool = False,
) -> dict[str, Any]:
    """What participant ``name`` serves at ``GET /openapi.json``.

    ``extra`` is its spec's own routes; ``auth`` adds the bearer scheme, and a ``security``
    requirement and a 401 answer to every operation but ``/healthz`` and ``/readyz``;
    ``injected_failures`` (``--error-rate`` above 0) adds the status routes' 503 answer.
    """
    status_schemas = schema_with_defs(BatchBody.model_json_schema(ref_template=SCHEMA_REF))
    schemas: dict[str, Any] = {
        "Problem": _PROBLEM_SCHEMA,
        "BatchBody": status_schemas[0],
        **status_schemas[1],
    }
    paths = _framework_paths(max_batch)
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
