"""The aggregator's HTTP API without a web framework: what each route answers, once.

Both servers, the aiohttp application (:mod:`aggregator.web`) and the ASGI one
(:mod:`aggregator.asgi`), route a request here and send back the :class:`Answer`; what a route
raises is answered by both from the one error table (:mod:`aggregator._problems`). A server only
translates: its request's path parameters, query and headers in, an :class:`Answer` (or, for
the watch stream, views to send as Server-Sent Events) out.
"""

from __future__ import annotations

import contextlib
import json
import os
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from multidict import MultiMapping

from contract import Problem, bearer_matches, given_once, unauthorized

from . import _fleet
from ._fleet import QUERY_PARAMS, cursor_key, parse_query, parse_time
from ._jobs import MAX_BODY_BYTES as MAX_JOB_BODY_BYTES
from ._jobs import parse_job
from ._problems import status_for
from ._scans import MAX_PAGES, MAX_SUMMARIES, Slots
from .core import Aggregator
from .errors import AggregatorError, BadRequest, NoInitiator, NotSupported
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import openapi_document
from .options import MAX_BATCH, ReadOptions
from .schema import (
    FLEET_PAGE,
    REDRIVE_JOB,
    REDRIVE_JOBS,
    REDRIVE_STARTED,
    STALLED,
    SUMMARY,
    TIMELINE,
    VIEW,
    VIEWS,
    RedriveStartedBody,
)

JSON = "application/json"
#: The routes that need no token: health, readiness and the status page's files (its API calls do).
OPEN_ROUTES = frozenset({"healthz", "readyz", "ui_page", "ui_file", "ui_slash"})
#: The headers of a watch stream: no caching, and no buffering by a proxy (nginx reads the second).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


Query = MultiMapping[str]
"""A request's query parameters (aiohttp's own; an ASGI server's copied into a ``MultiDict``)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A response: status, body, content type and headers."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def problem(cls, problem: Problem) -> Answer:
        """A problem+json answer."""
        return cls(problem.status, problem.body(), "application/problem+json", problem.headers)


def authorized(expected: str, route: str | None, authorization: Sequence[str]) -> Answer | None:
    """None if the request may go on (no token configured, an open route, the right bearer
    token); else the 401 to answer. ``route`` is the matched route's name, never the path:
    ``/workflows/healthz`` is a workflow's view."""
    if not expected or route in OPEN_ROUTES or bearer_matches(authorization, expected):
        return None
    return Answer.problem(unauthorized("aggregator"))


def token_for(agg: Aggregator, token: str | None) -> str:
    """The inbound token: the one given, else the definition's ``[auth]``, else none ("")."""
    return token or agg.definition.auth.bearer() or ""


_DEFAULT_OPTIONS = ReadOptions()


def read_options(agg: Aggregator, query: Query, cache_control: str | None) -> ReadOptions:
    """``Cache-Control``, ``?timeout_ms=`` and ``?min_version=`` of a request (:class:`BadReadOptions`)."""
    if cache_control is None and not query.keys():
        return _DEFAULT_OPTIONS  # the common read: nothing to parse
    return ReadOptions.from_http(
        cache_control=cache_control or "",
        timeout_ms=query.get("timeout_ms"),
        min_versions=query.getall("min_version", []),
        participants=agg.definition.versioned(),
    )


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


async def view(
    agg: Aggregator, workflow_id: str, query: Query, cache_control: str | None, if_none_match: str | None
) -> Answer:
    """``GET /workflows/{id}``: the reconstructed view (304 when ``If-None-Match`` holds its ETag)."""
    try:
        found = await agg.view(workflow_id, read_options(agg, query, cache_control))
    except AggregatorError as exc:  # answered from the table; counted here, by its status
        agg.metrics.views.inc(str(status_for(exc)))
        raise
    etag = found.etag
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if if_none_match and _matches(if_none_match, etag):
        agg.metrics.views.inc("304")
        return Answer(304, content_type=None, headers=headers)
    agg.metrics.views.inc("200")
    return Answer(200, VIEW.dump_json(found.to_json()), headers=headers)


#: The query parameters of ``GET /workflows``: a batch of ids with read options, the stalled list
#: (``id`` there too, so that giving both gets its own clear error), or a fleet query.
_BATCH_PARAMS = frozenset({"id", "timeout_ms", "min_version"})
_STALLED_PARAMS = frozenset({"stalled", "limit", "id"})
#: What makes ``GET /workflows`` a fleet query (``limit`` alone does not: the stalled list has one too).
_FLEET_MARKS = QUERY_PARAMS - {"limit"}
_NO_STORE = {"Cache-Control": "no-store"}


def _unknown(query: Query, known: frozenset[str]) -> None:
    unknown = sorted(set(query.keys()) - known)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise BadRequest(f"unknown query parameter {shown} (expected {', '.join(sorted(known))})")


async def views(agg: Aggregator, query: Query, cache_control: str | None) -> Answer:
    """``GET /workflows?id=a&id=b``: several views, one batch call per participant;
    ``?stalled=true[&limit=N]``: the stalled workflows, found through the initiator; or
    ``?state=S[&state=…][&step=X][&updated_before=T][&updated_after=T][&limit=N][&cursor=C]``:
    a page of the in-flight workflows in those states (:mod:`aggregator._fleet`)."""
    ids = query.getall("id", [])
    stalled = "stalled" in query
    if not stalled and not ids and not _FLEET_MARKS.isdisjoint(query.keys()):
        return await fleet(agg, query)
    if ids and not _FLEET_MARKS.isdisjoint(query.keys()):
        raise BadRequest("give id (a batch) or state with its filters (a query), not both")
    _unknown(query, _STALLED_PARAMS if stalled else _BATCH_PARAMS)
    if stalled:
        if ids or query.getall("stalled", []) != ["true"]:
            raise BadRequest("use stalled=true alone (not with id), once")
        raw_limit = query.get("limit") or "100"
        if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            raise BadRequest(f"limit {raw_limit[:20]!r}: expected a whole number from 1 to 1000")
        async with _scanning(agg, "pages"):  # up to 10,000 listed workflows: a fleet page's slot
            found = await agg.stalled(int(raw_limit))
        body = STALLED.dump_json({"views": [v.to_json() for v in found]})
        return Answer(200, body, headers=_NO_STORE)
    if not ids:
        raise BadRequest(
            "give at least one id query parameter (/workflows?id=a&id=b), stalled=true, "
            "or a state to list (/workflows?state=IN_PROGRESS)"
        )
    if len(ids) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} ids per request (got {len(ids)})")
    found, not_found = await agg.views(ids, read_options(agg, query, cache_control))
    body = VIEWS.dump_json({"views": [v.to_json() for v in found], "not_found": not_found})
    return Answer(200, body, headers={"Cache-Control": "private, no-cache"})


@dataclass(frozen=True, slots=True)
class _Scans:
    """The bound on the listing scans one aggregator's HTTP API runs at once (:mod:`aggregator._scans`)."""

    summaries: Slots = field(
        default_factory=lambda: Slots("summaries", MAX_SUMMARIES, lambda: _fleet.SUMMARY_TIME_S)
    )
    pages: Slots = field(
        default_factory=lambda: Slots("fleet pages or stalled lists", MAX_PAGES, lambda: _fleet.PAGE_TIME_S)
    )


#: Each aggregator's bound, shared by every server (aiohttp, ASGI) that serves it.
_SCANS: weakref.WeakKeyDictionary[Aggregator, _Scans] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _scanning(agg: Aggregator, kind: Literal["pages", "summaries"]) -> AsyncIterator[None]:
    """A slot of ``agg``'s bound on ``kind`` for the block; a scan that has no listing to go
    through (:meth:`Aggregator.check_listing`) is refused at once, not after waiting for one."""
    agg.check_listing()
    scans = _SCANS.get(agg)
    if scans is None:
        scans = _SCANS[agg] = _Scans()
    async with (scans.pages if kind == "pages" else scans.summaries).hold():
        yield


async def fleet(agg: Aggregator, query: Query) -> Answer:
    """``GET /workflows?state=…``: one page of in-flight workflows in those states.

    At most :data:`~aggregator._scans.MAX_PAGES` pages are built at once per aggregator: one
    past that waits up to :data:`~aggregator._scans.WAIT_S` for a slot, then is a 429 problem
    with ``Retry-After`` (:mod:`aggregator._scans`); a page with bad parameters, or without a
    listing to scan (400, 501, 503), is refused first."""
    _unknown(query, QUERY_PARAMS)
    values = {name: query.getall(name) for name in set(query.keys())}
    parsed = parse_query(values, agg.definition, key=cursor_key(agg.definition))
    async with _scanning(agg, "pages"):
        page = await agg.query(parsed)
    body = FLEET_PAGE.dump_json(
        {
            "views": [v.to_json() for v in page.views],
            "next": page.next,
            "scanned": page.scanned,
            "budget_exhausted": page.budget_exhausted,
        }
    )
    return Answer(200, body, headers=_NO_STORE)


async def summary(agg: Aggregator, query: Query) -> Answer:
    """``GET /summary[?updated_after=T]``: in-flight workflows counted by derived state, bounded.

    At most :data:`~aggregator._scans.MAX_SUMMARIES` summaries run at once per aggregator: one
    past that waits up to :data:`~aggregator._scans.WAIT_S` for a slot, then is a 429 problem
    with ``Retry-After`` (:mod:`aggregator._scans`); one with bad parameters, or without a
    listing to scan (400, 501, 503), is refused first."""
    _unknown(query, frozenset({"updated_after"}))
    given = given_once({"updated_after": query.getall("updated_after", [])}, ["updated_after"], BadRequest)
    after = given.get("updated_after")
    since = None if after is None else parse_time(after, "updated_after")
    async with _scanning(agg, "summaries"):
        found = await agg.summary(since)
    body = SUMMARY.dump_json({"counts": found.counts, "scanned": found.scanned, "complete": found.complete})
    return Answer(200, body, headers=_NO_STORE)


async def timeline(agg: Aggregator, workflow_id: str) -> Answer:
    """``GET /workflows/{id}/timeline``: every participant's history, merged in time order."""
    return Answer(200, TIMELINE.dump_json(await agg.timeline(workflow_id)))


async def redrive(agg: Aggregator, workflow_id: str) -> Answer:
    """``POST /workflows/{id}/redrive``: every participant republishes the workflow's events."""
    report = await agg.redrive(workflow_id)
    return Answer(202, _json({"workflow_id": workflow_id, "participants": report}))


async def start_redrives(agg: Aggregator, body: bytes, query: Query) -> Answer:
    """``POST /redrives``: start a redrive job (:mod:`aggregator._jobs`); 202 with its id and
    cutoff, and its ``Location`` (relative: right wherever a gateway mounts the aggregator)."""
    _unknown(query, frozenset())
    spec = parse_job(body, agg.definition, key=cursor_key(agg.definition))
    if spec.ids is None:
        initiator = agg.definition.initiator
        if initiator is None:
            raise NoInitiator
        if agg.definition.participants[initiator].mapped:
            raise NotSupported(initiator, "listing")
    job = agg.jobs.start(spec)
    started = RedriveStartedBody(id=job.id, cutoff=job.summary()["cutoff"], state=job.state)
    return Answer(
        202, REDRIVE_STARTED.dump_json(started), headers={"Location": f"redrives/{job.id}", **_NO_STORE}
    )


def redrive_jobs(agg: Aggregator, query: Query) -> Answer:
    """``GET /redrives``: the jobs kept, newest first, without their results."""
    _unknown(query, frozenset())
    body = REDRIVE_JOBS.dump_json({"jobs": [job.summary() for job in agg.jobs.list()]})
    return Answer(200, body, headers=_NO_STORE)


def redrive_job(agg: Aggregator, job_id: str) -> Answer:
    """``GET /redrives/{id}``: a job's progress and its results so far."""
    return Answer(200, REDRIVE_JOB.dump_json(agg.jobs.get(job_id).body()), headers=_NO_STORE)


async def cancel_redrives(agg: Aggregator, job_id: str) -> Answer:
    """``DELETE /redrives/{id}``: stop a running job (its results so far are kept); 202 with the job."""
    job = await agg.jobs.cancel(job_id)
    return Answer(202, REDRIVE_JOB.dump_json(job.body()), headers=_NO_STORE)


def healthz(agg: Aggregator) -> Answer:
    """Alive (with the process id: under ``serve --workers N`` it tells the workers apart), and each
    participant's measured clock offset (null until measured)."""
    return Answer(200, _json({"status": "ok", "pid": os.getpid(), "clock_offset_ms": agg.clocks.snapshot()}))


def readyz(agg: Aggregator) -> Answer:
    """Ready to serve: 200 while open (``degraded`` in the body while the event feed is down or
    participants fail or cannot be reached), 503 while not open (the status code is what a load
    balancer reads). Each participant is shown as it last answered: ``unknown`` before any call,
    ``unreachable`` after a failed one, ``failing`` / ``probing`` while its circuit is open, else ``ok``."""
    health = agg.health()
    if not health.ready:  # said for the load balancer, not for the embedding program
        return Answer.problem(Problem(503, "aggregator is not open"))
    participants = dict(health.participants)
    failing = health.failing
    unreachable = health.unreachable
    problems = [health.degraded] if health.degraded else []
    if failing and len(failing) == len(participants):
        problems.append("every participant is failing")
    elif failing:
        problems.append(f"failing: {', '.join(failing)}")
    if unreachable:
        problems.append(f"unreachable: {', '.join(unreachable)}")
    if health.silent:
        problems.append(
            f"published nothing (no event, no watermark) since the event feed came up: {', '.join(health.silent)}"
        )
    body: dict[str, Any] = {
        "status": "degraded" if problems else "ready",
        "freshness": agg.settings.freshness,
        "participants": participants,
    }
    if agg.feed is not None:
        body["event_feed"] = {
            "connected": agg.feed.healthy,
            "outages": agg.feed.outages,
            "silent": list(health.silent),
        }
    if problems:
        body["detail"] = "; ".join(problems)
    return Answer(200, _json(body))


def metrics(agg: Aggregator) -> Answer:
    """Prometheus text exposition."""
    return Answer(200, agg.metrics.render(), METRICS_CONTENT_TYPE)


def openapi(agg: Aggregator, *, auth: bool) -> Answer:
    """The OpenAPI 3.1 description of this API."""
    return Answer(200, _json(openapi_document(agg.definition, auth=auth)))


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


# -- the status page: static files shipped in the package (aggregator/static) ---------------

_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_PAGES: dict[str, Answer] = {}


def ui_page(name: str | None) -> Answer:
    """``GET /ui/`` and its files (``/ui/app.js``, …): read once from the package; no build step,
    nothing from outside, a Content-Security-Policy that lets them talk to this aggregator only.
    The page needs no token to load (a browser following a link cannot send one); the API calls
    it makes carry the token the user gives it."""
    if not _PAGES:
        static = resources.files("aggregator") / "static"
        for file, kind in _FILES.items():
            _PAGES[file] = Answer(200, (static / file).read_bytes(), f"{kind}; charset=utf-8", _PAGE_HEADERS)
    found = _PAGES.get(name or "index.html")
    return found if found is not None else Answer.problem(Problem(404, "Not Found"))


def ui_slash() -> Answer:
    """``GET /ui``: to ``ui/`` (relative: right wherever a gateway mounts the aggregator)."""
    return Answer(302, content_type=None, headers={"Location": "ui/"})


__all__ = [
    "MAX_JOB_BODY_BYTES",
    "OPEN_ROUTES",
    "Answer",
    "Query",
    "authorized",
    "cancel_redrives",
    "fleet",
    "healthz",
    "metrics",
    "openapi",
    "read_options",
    "readyz",
    "redrive",
    "redrive_job",
    "redrive_jobs",
    "start_redrives",
    "summary",
    "timeline",
    "token_for",
    "ui_page",
    "ui_slash",
    "view",
    "views",
]
