"""Redrive jobs: many workflows redriven as one tracked job, selected by a filter or by ids.

``POST /redrives`` starts a :class:`Job`: its ``cutoff`` is the time it was created, and only
workflows whose newest part changed before it are taken (one that starts failing while the job
runs is not swept in). The job selects its workflows (a fleet query's filter, ``stalled``, or
a list of ids) and redrives each one as ``POST /workflows/{id}/redrive`` does
(:meth:`Stalls.redrive`: every participant republishes that workflow's events with their
original ids, so a workflow redriven twice is not harmed). Each workflow's outcome is one of
:data:`RESULTS`:

* ``republished``: at least one participant published events again;
* ``nothing_to_republish``: every participant answered, none held an event of it to publish;
* ``failed``: a participant could not be asked (``detail`` names it and why);
* ``selected``: a dry run; taken, not redriven.

Bounds, all in this process's memory (a restart forgets every job; redriving again is safe):

* ``rate_per_s`` workflows a second at most (default :data:`DEFAULT_RATE_PER_S`, at most
  :data:`MAX_RATE_PER_S`), paced: one redrive starts every ``1/rate_per_s`` seconds. A redrive
  calls each participant once, so no participant gets more republish requests a second than
  that; jobs running side by side share one pace of :data:`MAX_RATE_PER_S` as well.
* ``max`` workflows per job (default :data:`DEFAULT_MAX`, at most :data:`MAX_WORKFLOWS`), which
  bounds its results; :data:`MAX_IDS` ids per request;
* :data:`MAX_RUNNING` jobs running at once (another is a 429), :data:`MAX_JOBS` kept (the
  oldest finished one is dropped first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, get_args

from contract import iso

from ._fleet import MAX_STATES, FleetQuery, Resume, decode_cursor, derived_states, parse_query
from ._reads import check_workflow_id
from .definition import Definition
from .errors import AggregatorError, BadRequest, JobNotFound, TooManyJobs
from .options import MAX_BATCH
from .schema import JobState, RedriveJobBody, RedriveJobSummaryBody, RedriveResultBody
from .schema import RedriveResult as Result
from .view import View

log = logging.getLogger(__name__)

DEFAULT_RATE_PER_S = 20.0
MAX_RATE_PER_S = 500.0
DEFAULT_MAX = 1000
MAX_WORKFLOWS = 10_000
MAX_IDS = 1000
MAX_RUNNING = 4
MAX_JOBS = 50
#: Redrives of one job waiting for their participants' answers at once, at most.
_IN_FLIGHT = 64
#: Views asked for per page of a filter's selection.
_SELECT_PAGE = 500
#: Longest request body accepted.
MAX_BODY_BYTES = 256 * 1024

RESULTS: tuple[Result, ...] = get_args(Result)
#: The keys a filter may have (a fleet query's, without its page), or ``stalled`` alone.
FILTER_KEYS = frozenset({"state", "step", "updated_before", "updated_after"})
_BODY_KEYS = frozenset({"filter", "ids", "dry_run", "rate_per_s", "max"})

Views = Callable[[Sequence[str]], Awaitable[tuple[list[View], list[str]]]]
Redrive = Callable[[str], Awaitable[Mapping[str, Mapping[str, Any]]]]
Query = Callable[[FleetQuery], Awaitable[Any]]
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What ``POST /redrives`` asks (parsed by :func:`parse_job`)."""

    filter: dict[str, Any] | None
    """As given (echoed back), or None with ``ids``."""
    query: FleetQuery | None
    """The filter as a fleet query (None for ``stalled`` and for ``ids``)."""
    stalled: bool
    ids: list[str] | None
    dry_run: bool
    rate_per_s: float
    max: int


def _number(body: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    try:
        finite = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an integer past any float
        finite = False
    if not finite:
        raise BadRequest(f"{name} must be a number (got {json.dumps(value)[:40]})")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low:g} to {high:g} (got {value:g})")
    return float(value)


def parse_job(raw: bytes, definition: Definition, *, key: bytes) -> JobSpec:
    """A ``POST /redrives`` body, checked (:class:`BadRequest` for anything wrong)."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise BadRequest(f"unknown key {unknown[0][:40]!r} (expected {', '.join(sorted(_BODY_KEYS))})")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dry_run must be true or false")
    rate = _number(body, "rate_per_s", DEFAULT_RATE_PER_S, 0.01, MAX_RATE_PER_S)
    raw_max = body.get("max", DEFAULT_MAX)
    if isinstance(raw_max, float) and raw_max.is_integer():  # JSON Schema's integer admits 19.0
        raw_max = int(raw_max)
    if isinstance(raw_max, bool) or not isinstance(raw_max, int) or not 1 <= raw_max <= MAX_WORKFLOWS:
        raise BadRequest(f"max must be a whole number from 1 to {MAX_WORKFLOWS}")
    given_filter, ids = body.get("filter"), body.get("ids")
    if (given_filter is None) == (ids is None):
        raise BadRequest(
            'give filter (e.g. {"stalled": true} or {"state": "IN_PROGRESS"}) or ids, one of them'
        )
    if ids is not None:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise BadRequest("ids must be a non-empty list of workflow ids")
        if len(ids) > MAX_IDS:
            raise BadRequest(f"at most {MAX_IDS} ids per job (got {len(ids)})")
        for workflow_id in ids:
            check_workflow_id(workflow_id)
        return JobSpec(None, None, False, list(dict.fromkeys(ids)), dry_run, rate, raw_max)
    if not isinstance(given_filter, dict) or not given_filter:
        raise BadRequest('filter must be an object: {"stalled": true} or a fleet query\'s parameters')
    if "stalled" in given_filter:
        if given_filter != {"stalled": True}:
            raise BadRequest('a filter on stalled workflows is {"stalled": true}, alone')
        return JobSpec(dict(given_filter), None, True, None, dry_run, rate, raw_max)
    unknown = sorted(set(given_filter) - FILTER_KEYS)
    if unknown:
        raise BadRequest(
            f"unknown filter key {unknown[0][:40]!r} (expected stalled, or {', '.join(sorted(FILTER_KEYS))})"
        )
    values: dict[str, list[str]] = {}
    for name, value in given_filter.items():
        listed = value if isinstance(value, list) and name == "state" else [value]
        if not all(isinstance(v, str) for v in listed) or len(listed) > MAX_STATES:
            raise BadRequest(
                f"filter {name} must be a string{' or a list of them' if name == 'state' else ''}"
            )
        values[name] = listed
    query = parse_query(values, definition, key=key)
    return JobSpec(dict(given_filter), query, False, None, dry_run, rate, raw_max)


class Pace:
    """One start every ``1/rate`` seconds, at most (no burst: a slot missed is not made up)."""

    def __init__(self, rate_per_s: float) -> None:
        self._interval = 1 / rate_per_s
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def outcome(report: Mapping[str, Mapping[str, Any]]) -> tuple[Result, str]:
    """A workflow's result and detail from what each participant answered its redrive."""
    failed = {n: r for n, r in report.items() if "error" in r}
    if failed:
        return "failed", "; ".join(
            f"{n}: {r['error']}" + (f" ({r['detail']})" if r.get("detail") else "") for n, r in failed.items()
        )
    counts = {n: int(r["republished"]) for n, r in report.items() if "republished" in r}
    detail = ", ".join(f"{n} {c}" for n, c in counts.items())
    return ("republished" if sum(counts.values()) else "nothing_to_republish"), detail


@dataclass(slots=True, eq=False)
class Job:
    """One redrive job: what it was asked, its progress and its results."""

    id: str
    spec: JobSpec
    cutoff: float
    """POSIX seconds: only workflows whose newest part changed before are taken."""
    state: JobState = "running"
    selected: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    """Ids given that no participant knows, or that changed after the cutoff."""
    error: str | None = None
    finished: float | None = None
    results: list[RedriveResultBody] = field(default_factory=list)
    task: asyncio.Task[Any] | None = None

    def summary(self) -> RedriveJobSummaryBody:
        """The job without its results (``GET /redrives``)."""
        return {
            "id": self.id,
            "state": self.state,
            "cutoff": iso(datetime.fromtimestamp(self.cutoff, UTC)),
            "finished": None if self.finished is None else iso(datetime.fromtimestamp(self.finished, UTC)),
            "dry_run": self.spec.dry_run,
            "rate_per_s": self.spec.rate_per_s,
            "max": self.spec.max,
            "filter": self.spec.filter,
            "ids": len(self.spec.ids) if self.spec.ids is not None else None,
            "selected": self.selected,
            "done": self.done,
            "failed": self.failed,
            "skipped": self.skipped,
            "error": self.error,
        }

    def body(self) -> RedriveJobBody:
        """The job with its results (``GET /redrives/{id}``)."""
        return RedriveJobBody(**self.summary(), results=list(self.results))


class Jobs:
    """The redrive jobs of one aggregator, in its memory (see the module docstring)."""

    def __init__(
        self,
        *,
        definition: Definition,
        views: Views,
        query: Query,
        key: bytes,
        redrive: Redrive,
        spawn: Spawn,
    ) -> None:
        self._definition = definition
        self._states = frozenset(derived_states(definition))
        """What a ``stalled`` job lists: every derived state (``stalled`` decides)."""
        self._views = views
        self._query = query
        self._key = key
        self._redrive = redrive
        self._spawn = spawn
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._shared = Pace(MAX_RATE_PER_S)

    def running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state == "running")

    def start(self, spec: JobSpec) -> Job:
        """Start a job now (:class:`TooManyJobs` past :data:`MAX_RUNNING`)."""
        if self.running() >= MAX_RUNNING:
            raise TooManyJobs(MAX_RUNNING)
        while len(self._jobs) >= MAX_JOBS:
            oldest = next((k for k, j in self._jobs.items() if j.state != "running"), None)
            if oldest is None:
                break
            del self._jobs[oldest]
        job = Job(id=secrets.token_hex(8), spec=spec, cutoff=time.time())
        self._jobs[job.id] = job
        job.task = self._spawn(self._run(job))
        return job

    def get(self, job_id: str) -> Job:
        found = self._jobs.get(job_id)
        if found is None:
            raise JobNotFound(job_id)
        return found

    def list(self) -> list[Job]:
        """Every job kept, newest first."""
        return list(reversed(self._jobs.values()))

    async def cancel(self, job_id: str) -> Job:
        """Stop a running job (its results so far are kept); a finished one is left as it is."""
        job = self.get(job_id)
        if job.state == "running":
            job.state = "cancelled"
            job.finished = time.time()
            if job.task is not None:
                job.task.cancel()
                await asyncio.wait([job.task], timeout=5)
        return job

    async def _run(self, job: Job) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        room = asyncio.Semaphore(_IN_FLIGHT)
        pace = Pace(job.spec.rate_per_s)
        try:
            async for view in self._select(job):
                if job.spec.dry_run:
                    job.results.append(
                        {"workflow_id": view.workflow_id, "result": "selected", "detail": "dry run"}
                    )
                    job.done += 1
                    continue
                await room.acquire()
                await pace.wait()
                await self._shared.wait()
                task = asyncio.create_task(self._one(job, view.workflow_id, room))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
        except AggregatorError as exc:
            job.error = str(exc)
            log.warning("redrive job %s: %s", job.id, exc)
            if in_flight:
                await asyncio.gather(*in_flight)
        finally:
            # Cancelled (the job or the aggregator), wherever it waited: no redrive outlives it.
            for task in in_flight:
                task.cancel()
            if job.state == "running":
                job.state = "done"
                job.finished = time.time()
        log.info(
            "redrive job %s %s: %d selected, %d done, %d failed",
            job.id,
            job.state,
            job.selected,
            job.done,
            job.failed,
        )

    async def _one(self, job: Job, workflow_id: str, room: asyncio.Semaphore) -> None:
        try:
            try:
                result, detail = outcome(await self._redrive(workflow_id))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                result, detail = "failed", str(exc) or type(exc).__name__
            job.results.append({"workflow_id": workflow_id, "result": result, "detail": detail})
            job.done += 1
            if result == "failed":
                job.failed += 1
        finally:
            room.release()

    def _take(self, job: Job, view: View) -> bool:
        if job.selected >= job.spec.max:
            return False
        changed = view.changed_at
        if changed is None or not changed < job.cutoff:
            return False
        if job.spec.stalled and not view.stalled:
            return False
        job.selected += 1
        return True

    async def _select(self, job: Job) -> Any:
        """The job's workflows, as they are found (an async iterator of views)."""
        spec = job.spec
        if spec.ids is not None:
            for start in range(0, len(spec.ids), MAX_BATCH):
                views, _ = await self._views(spec.ids[start : start + MAX_BATCH])
                by_id = {v.workflow_id: v for v in views}
                for workflow_id in spec.ids[start : start + MAX_BATCH]:
                    view = by_id.get(workflow_id)
                    if view is not None and self._take(job, view):
                        yield view
                    elif job.selected < spec.max:
                        job.skipped += 1
            return
        base = spec.query or FleetQuery(states=self._states)
        before = job.cutoff if base.updated_before is None else min(base.updated_before, job.cutoff)
        after: Resume | None = None
        while job.selected < spec.max:
            page = await self._query(
                FleetQuery(
                    states=base.states,
                    step=base.step,
                    updated_before=before,
                    updated_after=base.updated_after,
                    limit=_SELECT_PAGE,
                    after=after,
                )
            )
            for view in page.views:
                if self._take(job, view):
                    yield view
            if page.next is None:
                return
            after = decode_cursor(page.next, self._key)


__all__ = [
    "DEFAULT_MAX",
    "DEFAULT_RATE_PER_S",
    "MAX_IDS",
    "MAX_JOBS",
    "MAX_RATE_PER_S",
    "MAX_RUNNING",
    "MAX_WORKFLOWS",
    "RESULTS",
    "Job",
    "JobSpec",
    "Jobs",
    "outcome",
    "parse_job",
]
