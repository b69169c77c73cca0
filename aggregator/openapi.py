"""The OpenAPI 3.1 document of the aggregator's HTTP API: paths written here, bodies from :mod:`aggregator.schema`."""

from __future__ import annotations

from typing import Any

from .definition import Definition
from .schema import component_schemas

_PROBLEM = {"$ref": "#/components/responses/Problem"}


def openapi_document(definition: Definition) -> dict[str, Any]:
    """What ``GET /openapi.json`` serves."""
    names = sorted(definition.participants)
    workflow_id = {
        "name": "workflow_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    }
    read_params = [
        {
            "name": "timeout_ms",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 600000},
            "description": f"Shortens the request deadline (default {definition.settings.deadline_ms} ms).",
        },
        {
            "name": "Cache-Control",
            "in": "header",
            "schema": {"type": "string"},
            "description": "`max-age=N`: parts older than N s are refetched; `no-cache`: all are refetched.",
        },
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Workflow status aggregator: {definition.name}", "version": "0.1.0"},
        "paths": {
            "/workflows/{workflow_id}": {
                "get": {
                    "summary": "The workflow reconstructed from its participants' parts",
                    "parameters": [
                        workflow_id,
                        *read_params,
                        {
                            "name": "min_version",
                            "in": "query",
                            "schema": {
                                "type": "array",
                                "items": {
                                    "type": "string",
                                    "pattern": f"^({'|'.join(names)}):[0-9]{{1,18}}$",
                                },
                            },
                            "description": "PARTICIPANT:VERSION, repeatable: wait within the deadline for that version.",
                        },
                        {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "The view (possibly partial: see `complete` and each part's `error`)",
                            "headers": {
                                "ETag": {"schema": {"type": "string"}},
                                "Cache-Control": {"schema": {"type": "string"}},
                            },
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/View"}}
                            },
                        },
                        "304": {"description": "Not modified (If-None-Match matched the ETag)"},
                        "400": _PROBLEM,
                        "401": _PROBLEM,
                        "404": _PROBLEM,
                        "503": _PROBLEM,
                    },
                }
            },
            "/workflows/{workflow_id}/watch": {
                "get": {
                    "summary": "Server-Sent Events: the view now, then a `view` event per change",
                    "parameters": [workflow_id],
                    "responses": {
                        "200": {"description": "text/event-stream", "content": {"text/event-stream": {}}},
                        "400": _PROBLEM,
                        "401": _PROBLEM,
                        "503": _PROBLEM,
                    },
                }
            },
            "/workflows": {
                "get": {
                    "summary": "Several views; each participant is asked once through its batch endpoint",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
                        },
                        *read_params,
                    ],
                    "responses": {
                        "200": {
                            "description": "The views found, and the ids no participant knows",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Views"}}
                            },
                        },
                        "400": _PROBLEM,
                        "401": _PROBLEM,
                    },
                }
            },
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {"summary": "Ready", "responses": {"200": {"description": "ready"}, "503": _PROBLEM}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
            },
        },
        "components": {
            "schemas": component_schemas(),
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": {"type": "object"}}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
