"""The same saga under the two other coordination strategies (docs/design.md, "Coordination strategies").

- **Orchestration** (:data:`ORCHESTRATOR_SPEC`, ``python -m participants orchestrator``): a
  participant of its own, on the same framework (store, outbox, inbox, manual acks). It owns
  every workflow's state, answers ``POST /orders``, and decides every next step and every
  compensation centrally (:data:`FLOW`): it sends commands on
  ``{prefix}/command/{participant}/{action}`` and listens to the participants' replies, their
  usual events. The participants run :func:`orchestrated` specs: the same domain handlers,
  keyed by command instead of by the other participants' events (:data:`ACTIONS`).
- **Front controller** (:func:`front_controller`, ``python -m participants order
  --front-controller``): the order service, which starts every workflow, also consumes every
  saga event and keeps the whole workflow in its own database.

Both answer ``GET /workflows/{id}`` with the aggregator's view (the same JSON, the state
derived by the same definition rules through :func:`aggregator.view.build_view`), every part
with ``source: "store"``. A part's ``staleness_ms`` counts from the moment its producer
published the event the coordinator last applied: an honest bound, since the producer may have
changed since, unannounced as yet.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from aggregator.definition import Definition, load_definition
from aggregator.schema import ViewBody
from aggregator.view import Part, build_view
from contract import ORCHESTRATOR, CloudEvent, age_s, command_type, is_valid_workflow_id, problem, utc_now
from participants import Participant
from participants.http import SERVICE
from participants.openapi import json_response, problem_response
from participants.spec import (
    Command,
    Handler,
    HandlerContext,
    NoSettings,
    OpenAPIPaths,
    ParticipantSpec,
    Transition,
)

from .saga import ORDER, Order, OrderRequest, order_fields, order_of, post_order_with, start_once
from .saga_openapi import orders_api

#: What the orchestrator commands after each event of the saga: the whole flow, in one place.
FLOW: Mapping[str, tuple[tuple[str, str], ...]] = {
    "order.created": (("payment", "authorize"),),
    "payment.authorized": (("inventory", "reserve"),),
    "payment.declined": (("order", "cancel"),),
    "inventory.reserved": (("shipping", "schedule"),),
    "inventory.rejected": (("payment", "refund"),),
    "shipping.scheduled": (("order", "confirm"),),
    "shipping.failed": (("inventory", "release"), ("payment", "refund")),
    "payment.refunded": (("order", "cancel"),),
    "order.confirmed": (),
    "order.cancelled": (),
    "inventory.released": (),
}

#: Each participant's actions under orchestration: the choreography event whose (unchanged)
#: handler the action runs. The order's ``create`` is the one handler choreography has no
#: event for (there ``POST /orders`` creates the order).
ACTIONS: Mapping[str, Mapping[str, str]] = {
    "order": {"create": "", "confirm": "shipping.scheduled", "cancel": "payment.refunded"},
    "payment": {"authorize": "order.created", "refund": "shipping.failed"},
    "inventory": {"reserve": "payment.authorized", "release": "shipping.failed"},
    "shipping": {"schedule": "inventory.reserved"},
}

#: Every event type of the saga, which a coordinator consumes.
SAGA_EVENTS = tuple(FLOW)


_PARTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS coordinated_parts (
    workflow_id TEXT NOT NULL,
    participant TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    history TEXT NOT NULL,
    PRIMARY KEY (workflow_id, participant)
);
"""


def _create_order(ctx: HandlerContext[NoSettings]) -> Transition | None:
    """``command.order.create``: record the order as PENDING (``POST /orders`` does it under choreography)."""
    if ctx.current is not None:
        return None
    return Transition("PENDING", "created", order_fields(order_of(ctx)))


def orchestrated(spec: ParticipantSpec[Any]) -> ParticipantSpec[Any]:
    """``spec`` acting on the orchestrator's commands instead of on the other participants' events.

    The handlers are the same functions; only what triggers them changes. The order service
    keeps ``POST /orders`` (an order placed there is adopted by the orchestrator when it sees
    ``order.created``), but workflows are normally started through the orchestrator.
    """
    actions = ACTIONS[spec.name]
    handlers = {
        command_type(spec.name, action): (spec.handlers[event] if event else _create_order)
        for action, event in actions.items()
    }
    return replace(spec, handlers=handlers)


# -- the parts a coordinator keeps -------------------------------------------------------------

Kept = dict[str, tuple[str, int, str, tuple[str, ...]]]
"""What a coordinator keeps of a workflow: participant → (state, version, updated_at, states so far)."""


def record_part(db: sqlite3.Connection, event: CloudEvent) -> bool:
    """Keep ``event``'s producer state as its part of the workflow, unless it is older than the kept one."""
    row = db.execute(
        "SELECT version, history FROM coordinated_parts WHERE workflow_id = ? AND participant = ?",
        (event.subject, event.source),
    ).fetchone()
    if row is not None and row[0] >= event.data.version:
        return False
    history = json.loads(row[1]) if row else []
    history.append([event.data.state, event.data.version, event.time])
    db.execute(
        "INSERT INTO coordinated_parts (workflow_id, participant, state, version, updated_at, history)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, participant) DO UPDATE SET"
        " state = excluded.state, version = excluded.version, updated_at = excluded.updated_at,"
        " history = excluded.history",
        (event.subject, event.source, event.data.state, event.data.version, event.time, json.dumps(history)),
    )
    return True


def _kept_parts(db: sqlite3.Connection, workflow_id: str) -> Kept:
    return {
        participant: (state, version, updated_at, tuple(h[0] for h in json.loads(history)))
        for participant, state, version, updated_at, history in db.execute(
            "SELECT participant, state, version, updated_at, history FROM coordinated_parts WHERE workflow_id = ?",
            (workflow_id,),
        )
    }


def _monotonic_of(at: str, now_wall: datetime, now: float) -> float:
    """The ``time.monotonic()`` instant of wall-clock time ``at`` (RFC 3339), for staleness."""
    return now - (age_s(at, now_wall) or 0.0)


def workflow_view(
    definition: Definition,
    workflow_id: str,
    kept: Kept,
    *,
    since: str,
) -> ViewBody:
    """The aggregator's view of ``workflow_id`` built from what a coordinator keeps.

    ``kept`` maps a participant to its last known ``(state, version, updated_at, history)``;
    a participant missing from it has published nothing for the workflow: known absent since
    ``since`` (when the coordinator first knew of the workflow).
    """
    now, now_wall = time.monotonic(), datetime.now(UTC)
    parts = {}
    for name in definition.participants:
        if name in kept:
            state, version, updated_at, history = kept[name]
            parts[name] = Part(
                name,
                state,
                version,
                updated_at,
                _monotonic_of(updated_at, now_wall, now),
                updated_at,
                "store",
                history=history,
            )
        else:
            parts[name] = Part(name, None, 0, None, _monotonic_of(since, now_wall, now), since, "store")
    return build_view(definition, workflow_id, parts, generated_at=utc_now()).to_json()


WORKFLOWS_API = OpenAPIPaths(
    paths={
        "/workflows/{workflow_id}": {
            "get": {
                "operationId": "getWorkflow",
                "summary": "The whole workflow as this coordinator keeps it (the aggregator's view shape)",
                "parameters": [
                    {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": json_response(
                        "The view: state derived by the workflow definition's rules, parts with source `store`",
                        {"type": "object", "required": ["workflow_id", "state", "parts", "staleness_ms"]},
                    ),
                    "400": problem_response("The id is not a valid workflow id"),
                    "404": problem_response("This coordinator knows no such workflow"),
                },
            }
        }
    }
)


def _workflow_route(app: web.Application, *, own_part: bool) -> None:
    """``GET /workflows/{id}``: the view of what this coordinator keeps; ``own_part``: the service
    is itself a participant of the workflow (the front controller), its own record is its part."""
    definition = _definition()

    async def get_workflow(request: web.Request) -> web.StreamResponse:
        service = request.app[SERVICE]
        workflow_id = request.match_info["workflow_id"]
        if not is_valid_workflow_id(workflow_id):
            return problem(400, "invalid workflow id", workflow_id=workflow_id[:200])
        kept: Kept = service.store.read(lambda db: _kept_parts(db, workflow_id))
        own = service.store.status(workflow_id)
        if own is None and not kept:
            return problem(404, "no such workflow", workflow_id=workflow_id)
        if own is not None and own_part:
            kept[service.name] = (own.state, own.version, own.updated_at, tuple(h.state for h in own.history))
        first = [own.history[0].at] if own is not None and own.history else []
        since = min([*first, *(updated_at for _, _, updated_at, _ in kept.values())])
        return web.json_response(workflow_view(definition, workflow_id, kept, since=since))

    app.router.add_get("/workflows/{workflow_id}", get_workflow)


def _merged_api(*apis: OpenAPIPaths) -> OpenAPIPaths:
    return OpenAPIPaths(
        paths={k: v for api in apis for k, v in api.paths.items()},
        schemas={k: v for api in apis for k, v in api.schemas.items()},
    )


# -- front controller --------------------------------------------------------------------------


def _recording(handler: Handler[Any] | None) -> Handler[Any]:
    """``handler`` (or no handler), the event's part kept first, in the same transaction."""

    def recording(ctx: HandlerContext[Any]) -> Transition | None:
        record_part(ctx.db, ctx.event)
        return handler(ctx) if handler is not None else None

    return recording


def front_controller(spec: ParticipantSpec[Any] = ORDER) -> ParticipantSpec[Any]:
    """``spec`` (the order service, which starts every workflow) also keeping the whole workflow.

    It consumes every saga event of the other participants, keeps each one's part in its own
    database (in the transaction that applies the event, so a crash loses nothing) and answers
    ``GET /workflows/{id}``; its own part is its own record.
    """
    handlers: dict[str, Handler[Any]] = dict(spec.handlers)
    for event in SAGA_EVENTS:
        if event.partition(".")[0] != spec.name:
            handlers[event] = _recording(spec.handlers.get(event))

    def routes(app: web.Application) -> None:
        if spec.routes is not None:
            spec.routes(app)
        _workflow_route(app, own_part=True)

    api = _merged_api(*([spec.openapi_paths] if spec.openapi_paths else []), WORKFLOWS_API)
    return replace(
        spec, handlers=handlers, schema=spec.schema + _PARTS_SCHEMA, routes=routes, openapi_paths=api
    )


# -- orchestrator ------------------------------------------------------------------------------


@functools.cache
def _definition() -> Definition:
    """The packaged definition of the example saga: its rules give the overall state."""
    return load_definition()


def _overall(kept: Kept) -> str:
    """The workflow's state by the definition's rules (the aggregator's own rule engine)."""
    rule = _definition().derive(
        {name: kept[name][0] if name in kept else None for name in _definition().participants}
    )
    return rule.state if rule else "UNKNOWN"


def _orchestrate(ctx: HandlerContext[NoSettings]) -> Transition | None:
    """A participant's event: keep its part, then command what :data:`FLOW` says comes next.

    The orchestrator's own state is the workflow's overall state; its data, the order. An
    ``order.created`` for a workflow it did not start (an order placed at the order service)
    is adopted; any other event of an unknown workflow is only kept. An event carrying a
    version of its part that is already kept commands nothing again.
    """
    event = ctx.event
    if not record_part(ctx.db, event):
        return None  # a version already known: its commands went out with it
    current = ctx.current
    if current is None and event.type != "order.created":
        return None
    order = dict(current.data) if current is not None else order_fields(order_of(ctx))
    commands = tuple(Command(participant, action, order) for participant, action in FLOW[event.type])
    state = _overall(_kept_parts(ctx.db, event.subject))
    if current is not None and not commands and state == current.state:
        return None
    return Transition(state, None, order if current is None else {}, commands)


def start_workflow(service: Participant, workflow_id: str, order: Order) -> bool:
    """``POST /orders`` at the orchestrator: own the workflow and command the order's creation."""
    fields = order_fields(order)
    start = Transition(_overall({}), None, fields, (Command("order", "create", fields),))
    return start_once(service, workflow_id, fields, start)


def _orchestrator_routes(app: web.Application) -> None:
    app.router.add_post("/orders", post_order_with(start_workflow, location="/workflows/{workflow_id}"))
    _workflow_route(app, own_part=False)


#: The orchestrator: ``python -m participants orchestrator`` (default port 8010).
ORCHESTRATOR_SPEC: ParticipantSpec[NoSettings] = ParticipantSpec(
    name=ORCHESTRATOR,
    handlers=dict.fromkeys(SAGA_EVENTS, _orchestrate),
    settings=NoSettings(),
    schema=_PARTS_SCHEMA,
    routes=_orchestrator_routes,
    openapi_paths=_merged_api(orders_api(OrderRequest), WORKFLOWS_API),
)
