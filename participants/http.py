"""The participant's HTTP API (docs/design.md, "Participant HTTP API"): status, batch status, health and readiness."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from contract import BatchBody, HistoryEntry, StatusBody, is_valid_workflow_id, problem, problem_middleware

from .service import ParticipantService
from .store import WorkflowStatus

SERVICE = web.AppKey("service", ParticipantService)

#: Most ids one batch request may name; a longer list is a 400, not a slow query.
MAX_BATCH = 1000
#: Largest request body accepted (only ``POST /orders`` has one); larger is a 413.
MAX_BODY = 64 * 1024


def create_app(service: ParticipantService) -> web.Application:
    """The participant's aiohttp application, with the spec's own routes added."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_BODY)
    app[SERVICE] = service
    app.router.add_get("/status/{workflow_id}", get_status)
    app.router.add_get("/status", get_statuses)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if service.spec.routes is not None:
        service.spec.routes(app, service)
    return app


def status_body(participant: str, status: WorkflowStatus) -> StatusBody:
    """The contract's status body of one workflow's local part."""
    return StatusBody(
        participant=participant,
        workflow_id=status.workflow_id,
        state=status.state,
        version=status.version,
        updated_at=status.updated_at,
        history=[HistoryEntry(state=h.state, version=h.version, at=h.at) for h in status.history],
        data=status.data,
    )


def _json(body: StatusBody | BatchBody) -> web.Response:
    return web.Response(body=body.model_dump_json().encode(), content_type="application/json")


async def _faults(service: ParticipantService) -> web.Response | None:
    """Injected delay and failure (``--latency-ms``, ``--jitter-ms``, ``--slow-rate``/``--slow-ms``, ``--error-rate``)."""
    faults = service.config.faults
    delay = faults.latency_ms + random.uniform(-faults.jitter_ms, faults.jitter_ms)
    if faults.slow_rate and random.random() < faults.slow_rate:
        delay += faults.slow_ms
    if delay > 0:
        await asyncio.sleep(delay / 1000)
    if faults.error_rate and random.random() < faults.error_rate:
        return problem(503, "injected failure (--error-rate)")
    return None


async def get_status(request: web.Request) -> web.StreamResponse:
    """``GET /status/{workflow_id}``: this participant's part, or 404 if it has none."""
    service = request.app[SERVICE]
    service.counts["status_requests"] += 1
    workflow_id = request.match_info["workflow_id"]
    if not is_valid_workflow_id(workflow_id):
        return problem(400, "workflow id must match [A-Za-z0-9._:-]{1,128}", workflow_id=workflow_id[:200])
    if (failed := await _faults(service)) is not None:
        return failed
    status = service.store.status(workflow_id)
    if status is None:
        return problem(
            404,
            f"{service.name} has no record of workflow {workflow_id!r}",
            workflow_id=workflow_id,
        )
    return _json(status_body(service.name, status))


async def get_statuses(request: web.Request) -> web.StreamResponse:
    """``GET /status?workflow_id=a&workflow_id=b``: the known parts, and the ids not known."""
    service = request.app[SERVICE]
    service.counts["batch_requests"] += 1
    ids = request.query.getall("workflow_id", [])
    if not ids:
        return problem(400, "give at least one workflow_id query parameter")
    if len(ids) > MAX_BATCH:
        return problem(400, f"at most {MAX_BATCH} workflow ids per request (got {len(ids)})")
    bad = [i for i in ids if not is_valid_workflow_id(i)]
    if bad:
        return problem(
            400,
            "workflow ids must match [A-Za-z0-9._:-]{1,128}",
            invalid=[b[:200] for b in bad[:10]],
        )
    if (failed := await _faults(service)) is not None:
        return failed
    found = service.store.statuses(ids)
    known = {s.workflow_id for s in found}
    return _json(
        BatchBody(
            statuses=[status_body(service.name, s) for s in found],
            missing=[i for i in dict.fromkeys(ids) if i not in known],
        )
    )


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
    return problem(503, f"not ready: {failing} unavailable", checks=checks)
