"""The OpenAPI 3.1 document of the aggregator's HTTP API, built from the running definition."""

from __future__ import annotations

from typing import Any

from .definition import Definition

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
    part = {
        "type": "object",
        "required": ["state", "version", "updated_at", "observed_at", "source", "latency_ms", "error"],
        "properties": {
            "state": {"type": ["string", "null"]},
            "version": {"type": ["integer", "null"]},
            "updated_at": {"type": ["string", "null"]},
            "observed_at": {"type": ["string", "null"]},
            "source": {"enum": ["live", "cache", "event", "stale", "none"]},
            "latency_ms": {"type": ["number", "null"]},
            "error": {"enum": ["timeout", "unavailable", "circuit_open", "bad_response", None]},
        },
    }
    view = {
        "type": "object",
        "required": [
            "workflow_id", "workflow", "state", "step", "complete", "parts", "staleness_ms", "anomalies", "generated_at",
        ],
        "properties": {
            "workflow_id": {"type": "string"},
            "workflow": {"type": "string", "const": definition.name},
            "state": {"type": "string"},
            "step": {"type": ["string", "null"]},
            "complete": {"type": "boolean"},
            "parts": {"type": "object", "properties": {n: {"$ref": "#/components/schemas/Part"} for n in names}},
            "staleness_ms": {"type": "integer", "minimum": 0},
            "anomalies": {"type": "array", "items": {"type": "object"}},
            "generated_at": {"type": "string"},
        },
    }  # fmt: skip
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
                                "items": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*:[0-9]+$"},
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
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "views": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/View"},
                                            },
                                            "not_found": {"type": "array", "items": {"type": "string"}},
                                        },
                                    }
                                }
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
            "schemas": {"View": view, "Part": part},
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": {"type": "object"}}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
