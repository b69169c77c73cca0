"""How the order service's own route, ``POST /orders``, appears in its OpenAPI document.

The request schema is the request model's own JSON Schema (the model the handler validates
with), so the document states exactly what is accepted.
"""

from __future__ import annotations

from pydantic import BaseModel

from contract import PROBLEM_JSON, WORKFLOW_ID_PATTERN
from participants.http import MAX_BODY
from participants.openapi import SCHEMA_REF, json_response, problem_response, schema_with_defs
from participants.spec import OpenAPIPaths

_VALIDATION_PROBLEM = {
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {
            "type": "object",
            "properties": {
                "errors": {
                    "type": "array",
                    "maxItems": 20,
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["field", "message"],
                    },
                }
            },
            "required": ["errors"],
        },
    ]
}


def orders_api(request_model: type[BaseModel]) -> OpenAPIPaths:
    """``POST /orders``, taking a body ``request_model`` validates."""
    request_schema, defs = schema_with_defs(request_model.model_json_schema(ref_template=SCHEMA_REF))
    name = request_model.__name__
    accepted = {
        "type": "object",
        "properties": {"workflow_id": {"type": "string", "pattern": WORKFLOW_ID_PATTERN}},
        "required": ["workflow_id"],
    }
    operation = {
        "operationId": "postOrder",
        "summary": "Place an order: starts the saga (idempotent on `order_id`)",
        "requestBody": {
            "required": True,
            "description": f"UTF-8 JSON, at most {MAX_BODY} bytes",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        },
        "responses": {
            "202": json_response(
                "Accepted: the workflow id (the `order_id` if given); re-posting the same order starts nothing new",
                accepted,
                headers={
                    "Location": {
                        "description": "`/status/{workflow_id}`",
                        "schema": {"type": "string"},
                    }
                },
            ),
            "400": problem_response(
                "The body is not UTF-8 JSON (or repeats a member name, uses NaN/Infinity, nests too "
                "deeply, has an integer of more than 4300 digits), or is not a JSON object"
            ),
            "409": problem_response("The `order_id` exists with a different body"),
            "413": problem_response(f"The body is larger than {MAX_BODY} bytes"),
            "422": {
                "description": "The body is JSON but not a valid order; `errors` names the fields",
                "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ValidationProblem"}}},
            },
        },
    }
    return OpenAPIPaths(
        paths={"/orders": {"post": operation}},
        schemas={name: request_schema, **defs, "ValidationProblem": _VALIDATION_PROBLEM},
    )
