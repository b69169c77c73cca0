"""The participant's HTTP API (docs/design.md, "Participant HTTP API"): status, batch status,
listing, outbox republish, health, readiness, Prometheus metrics.

With a token configured (``ParticipantConfig.token``, ``--token-env``) every route but
``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>``; the app describes itself
at ``GET /openapi.json`` (see :mod:`participants.openapi`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from contract import (
    WORKFLOW_ID_RULE,
    BatchBody,
    HistoryEntry,
    ListingBody,
    RepublishBody,
    StatusBody,
    bearer_middleware,
    is_valid_workflow_id,
    problem_middleware_for,
    tracing,
)

from ._listing import MAX_PAGE, Position, encode_cursor, is_listing, parse_listing
from ._problems import PROBLEMS
from .errors import BadRequest, NoRecord, Unavailable
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ParticipantMetrics
from .openapi import openapi_document
from .running import Participant
from .store import WorkflowStatus

log = logging.getLogger(__name__)

#: The running participant, for the handlers of the framework's routes and of a spec's own.
SERVICE = web.AppKey[Participant]("service")
OPENAPI = web.AppKey("openapi", bytes)
#: Its Prometheus registry (``GET /metrics``).
METRICS = web.AppKey("metrics", ParticipantMetrics)

#: Most ids one batch request may name; a longer list is a 400, not a slow query.
MAX_BATCH = 1000
#: Largest request body accepted (only ``POST /orders`` has one); larger is a 413.
MAX_BODY = 64 * 1024


def create_app(service: Participant) -> web.Application:
    """The participant's aiohttp application, with the spec's own routes added."""
    # The problem middleware is outermost: the 401s, the router's 404/405 and every error a
    # route raises are answered from the one table. The health routes are told by their matched
    # handler, never the path: "/status/healthz" is a read of a workflow named "healthz".
    token = service.config.token
    auth = (
        [
            bearer_middleware(
                token, realm=service.name, is_open=lambda r: r.match_info.handler in (healthz, readyz)
            )
        ]
        if token is not None
        else []
    )
    app = web.Application(
        middlewares=[*tracing.server_middlewares(), problem_middleware_for(PROBLEMS), *auth],
        client_max_size=MAX_BODY,
    )
    app[SERVICE] = service
    app[METRICS] = ParticipantMetrics(service)
    app.router.add_get("/status/{workflow_id}", get_status)
    app.router.add_get("/status", get_statuses)
    app.router.add_post("/outbox/{workflow_id}/republish", republish)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    if service.spec.routes is not None:
        service.spec.routes(app)
    document = openapi_document(
        service.name,
        service.spec.openapi_paths,
        max_batch=MAX_BATCH,
        max_page=MAX_PAGE,
        auth=service.config.token is not None,
        injected_failures=service.config.faults.error_rate > 0,
    )
    served = {
        (r.resource.canonical, r.method.lower())
        for r in app.router.routes()
        if r.resource and r.method != "HEAD"
    }
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    if served != described:
        log.warning(
            "%s: /openapi.json does not describe the routes served (spec.openapi_paths?): "
            "undocumented %s, documented but not served %s",
            service.name,
            sorted(served - described),
            sorted(described - served),
        )
    app[OPENAPI] = json.dumps(document).encode()
    return app


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("an object repeats a member name")
    return found


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """A route's request body as a JSON object (:class:`BadRequest`, a 400, if it is not one).

    Strict RFC 8259: UTF-8 only (no UTF-16/32 guessing), no ``NaN``/``Infinity``, no repeated
    member names. Nesting too deep for the parser and integers of more than 4,300 digits are
    400s too, never tracebacks; a body over :data:`MAX_BODY` raises a 413.
    """
    try:
        body = await request.read()
    except RequestPayloadError as exc:  # a Content-Encoding that does not decode, a cut-off body
        raise BadRequest(f"body cannot be read: {exc}"[:300]) from None
    try:
        parsed = json.loads(body.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digits limit
        # The digits limit's message ends in advice for the server's programmer: keep the fact.
        raise BadRequest(f"body is not valid JSON: {str(exc).split('; use ')[0]}") from None
    if not isinstance(parsed, dict):
        raise BadRequest("body must be a JSON object")
    return parsed


def status_body(participant: str, status: WorkflowStatus) -> StatusBody:
    """The contract's status body of one workflow's local part."""
    return StatusBody(
        participant=participant,
        workflow_id=status.workflow_id,
        state=status.state,
        version=status.version,
        updated_at=status.updated_at,
        history=[
            HistoryEntry(state=h.state, version=h.version, at=h.at, event=h.event, cause=h.cause)
            for h in status.history
        ],
        data=status.data,
    )


def _json(body: StatusBody | BatchBody | ListingBody | RepublishBody, status: int = 200) -> web.Response:
    return web.Response(body=body.model_dump_json().encode(), status=status, content_type="application/json")


async def _faults(service: Participant) -> None:
    """Injected delay and failure (``--latency-ms``, ``--jitter-ms``, ``--slow-rate``/``--slow-ms``, ``--error-rate``)."""
    faults = service.config.faults
    delay = faults.latency_ms + random.uniform(-faults.jitter_ms, faults.jitter_ms)
    if faults.slow_rate and random.random() < faults.slow_rate:
        delay += faults.slow_ms
    if delay > 0:
        await asyncio.sleep(delay / 1000)
    if faults.error_rate and random.random() < faults.error_rate:
        raise Unavailable("injected failure (--error-rate)")


def _check_id(workflow_id: str) -> None:
    """A path's workflow id, which must follow the contract's rule (else :class:`BadRequest`)."""
    if not is_valid_workflow_id(workflow_id):
        raise BadRequest(f"workflow id must be {WORKFLOW_ID_RULE}", workflow_id=workflow_id[:200])


async def get_status(request: web.Request) -> web.StreamResponse:
    """``GET /status/{workflow_id}``: this participant's part, or 404 if it has none."""
    service = request.app[SERVICE]
    service.counts["status_requests"] += 1
    workflow_id = request.match_info["workflow_id"]
    _check_id(workflow_id)
    await _faults(service)
    status = service.store.status(workflow_id)
    if status is None:
        raise NoRecord(service.name, workflow_id)
    return _json(status_body(service.name, status))


async def get_statuses(request: web.Request) -> web.StreamResponse:
    """``GET /status?workflow_id=a&workflow_id=b``: the known parts, and the ids not known;
    ``GET /status?state=S&updated_before=T&limit=N&after=C``: a page of the workflows held."""
    query = {key: request.query.getall(key) for key in request.query}
    if is_listing(query):
        return await list_statuses(request, query)
    service = request.app[SERVICE]
    service.counts["batch_requests"] += 1
    ids = query["workflow_id"]
    if len(ids) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} workflow ids per request (got {len(ids)})")
    bad = [i for i in ids if not is_valid_workflow_id(i)]
    if bad:
        raise BadRequest(f"workflow ids must be {WORKFLOW_ID_RULE}", invalid=[b[:200] for b in bad[:10]])
    await _faults(service)
    found = service.store.statuses(ids)
    known = {s.workflow_id for s in found}
    return _json(
        BatchBody(
            statuses=[status_body(service.name, s) for s in found],
            missing=[i for i in dict.fromkeys(ids) if i not in known],
        )
    )


async def list_statuses(request: web.Request, query: dict[str, list[str]]) -> web.StreamResponse:
    """The listing form of ``GET /status``: oldest first, at most ``limit``, ``next`` to go on."""
    service = request.app[SERVICE]
    service.counts["listing_requests"] += 1
    wanted = parse_listing(query)
    await _faults(service)
    after = wanted.after
    # One row more than the page tells whether there is a next page.
    found = service.store.page(
        states=wanted.states,
        updated_before=wanted.updated_before,
        after=None if after is None else (after.updated_at, after.workflow_id),
        limit=wanted.limit + 1,
    )
    page = found[: wanted.limit]
    last = page[-1] if len(found) > wanted.limit else None
    return _json(
        ListingBody(
            statuses=[status_body(service.name, s) for s in page],
            next=None if last is None else encode_cursor(Position(last.updated_at, last.workflow_id)),
        )
    )


async def republish(request: web.Request) -> web.StreamResponse:
    """``POST /outbox/{workflow_id}/republish``: publish this participant's events of it again."""
    service = request.app[SERVICE]
    service.counts["republish_requests"] += 1
    workflow_id = request.match_info["workflow_id"]
    _check_id(workflow_id)
    return _json(RepublishBody(republished=service.republish(workflow_id)), status=202)


async def healthz(request: web.Request) -> web.StreamResponse:
    """Alive; with counters that tests and benchmarks read."""
    service = request.app[SERVICE]
    return web.json_response(
        {
            "status": "ok",
            "participant": service.name,
            "counts": {**service.counts, **service.link.counts},
        }
    )


async def readyz(request: web.Request) -> web.StreamResponse:
    """200 when the database is open and the broker connected, else 503 saying which is not."""
    service = request.app[SERVICE]
    checks = {"database": service.store.is_open, "broker": service.link.connected}
    if all(checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    failing = ", ".join(k for k, ok in checks.items() if not ok)
    raise Unavailable(f"not ready: {failing} unavailable", checks=checks)


async def metrics(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: Prometheus text (the ``/healthz`` counts, the outbox backlog, ``process_*``)."""
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.StreamResponse:
    """``GET /openapi.json``: the OpenAPI 3.1 document of exactly the routes this app serves."""
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
