"""``python -m aggregator check-participant NAME --id ID``: ask one participant as the aggregator would.

Run before deploying a definition: it sends the request the aggregator would send (and the
batch request, when the participant has a batch endpoint or a batch mapping), shows the raw
answer, the record and the part it maps to, and every problem found: a raw state the table
does not know, a version that is not an integer, a time that does not parse, a slow answer, a
batch answer that disagrees with the single one. Exit status: 0 when the part maps cleanly,
1 on a mapping problem, 2 when the participant cannot be reached or the definition is wrong.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from contract import BATCH_READ, STATUS_READ

from ._client import ParticipantClient, _quoted
from ._http1 import Http1Pool
from ._mapped import MappedClient, client_for
from ._mapper import Mapped, MappingProblem, parse_json
from .definition import Definition
from .errors import DefinitionError, PartFailure

#: How much of a raw answer is shown.
SHOWN_BYTES = 2000
#: An answer slower than this share of the participant's ``timeout_ms`` is reported as slow.
SLOW_SHARE = 0.5

Severity = Literal["mapping", "unreachable"]


@dataclass
class Finding:
    """One thing found wrong."""

    kind: str
    detail: str
    severity: Severity = "mapping"


@dataclass
class Report:
    """What :func:`check_participant` found."""

    participant: str
    mapped: bool
    url: str
    request: str = ""
    headers: list[str] = field(default_factory=list)
    status: int | None = None
    latency_ms: float | None = None
    answer: str = ""
    answer_bytes: int = 0
    record: Any = None
    part: dict[str, Any] | None = None
    batch: dict[str, Any] | None = None
    problems: list[Finding] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 clean, 1 a mapping problem, 2 not reachable."""
        if any(p.severity == "unreachable" for p in self.problems):
            return 2
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (``--json``)."""
        return {
            "participant": self.participant,
            "mapped": self.mapped,
            "request": {"method": "GET", "url": self.request, "headers": self.headers},
            "answer": {
                "status": self.status,
                "latency_ms": self.latency_ms,
                "bytes": self.answer_bytes,
                "body": self.answer,
            },
            "record": self.record,
            "part": self.part,
            "batch": self.batch,
            "problems": [{"kind": p.kind, "detail": p.detail} for p in self.problems],
            "exit_status": self.exit_status,
        }


def _shown(body: bytes) -> str:
    text = body[:SHOWN_BYTES].decode("utf-8", "replace")
    return text + (f"… ({len(body)} bytes in all)" if len(body) > SHOWN_BYTES else "")


async def check_participant(definition: Definition, name: str, workflow_id: str) -> Report:
    """Ask participant ``name`` for ``workflow_id`` once (and through its batch); what was found."""
    spec = definition.participants.get(name)
    if spec is None:
        raise DefinitionError(f"no participant {name!r} (known: {sorted(definition.participants)})")
    _, tokens = definition.credentials()
    pool = Http1Pool()
    try:
        client = client_for(
            name,
            spec,
            transport=pool,
            max_bytes=definition.settings.max_response_bytes,
            token=tokens[name],
        )
        report = Report(participant=name, mapped=spec.mapped, url=spec.url)
        report.headers = sorted(client.request_headers())
        single = await _single(client, workflow_id, report)
        if report.exit_status != 2:  # reachable: the batch answer too
            await _batch(client, workflow_id, single, report)
        return report
    finally:
        await pool.aclose()


async def _ask(client: ParticipantClient, path: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    status, body = await client.get_any(path)
    return status, body, (time.perf_counter() - started) * 1000


async def _single(client: ParticipantClient, workflow_id: str, report: Report) -> Mapped | None:
    """The single request, its answer and its part; the record read from it, if there is one."""
    path = (
        client.request_path(workflow_id)
        if isinstance(client, MappedClient)
        else f"/status/{_quoted(workflow_id)}"
    )
    report.request = client.spec.url + path
    try:
        status, body, latency_ms = await _ask(client, path)
    except PartFailure as failure:
        report.problems.append(Finding(failure.kind, failure.detail, "unreachable"))
        return None
    report.status, report.latency_ms = status, round(latency_ms, 3)
    report.answer, report.answer_bytes = _shown(body), len(body)
    timeout_ms = client.spec.timeout_ms
    if latency_ms > SLOW_SHARE * timeout_ms:
        report.problems.append(
            Finding("slow", f"answered in {latency_ms:.0f} ms, more than half its timeout_ms ({timeout_ms})")
        )
    if isinstance(client, MappedClient):
        return _read_mapped(client, status, body, report, workflow_id)
    return _read_contract(status, body, report, workflow_id)


def _no_record(report: Report, workflow_id: str, why: str) -> None:
    report.problems.append(
        Finding(
            "no_record",
            f"no record of {workflow_id!r} ({why}): check the id, or the mapping's record/not_found",
        )
    )


def _read_mapped(
    client: MappedClient, status: int, body: bytes, report: Report, workflow_id: str
) -> Mapped | None:
    mapper = client.mapper
    if status in mapper.status.not_found:
        _no_record(report, workflow_id, f"HTTP {status} is in not_found")
        return None
    if not 200 <= status < 300:
        report.problems.append(Finding("bad_response", f"HTTP {status}, neither 2xx nor in not_found"))
        return None
    try:
        record = mapper.record(parse_json(body))
    except MappingProblem as problem:
        report.problems.append(Finding(problem.kind, problem.detail))
        return None
    report.record = record
    if record is None:
        where = mapper.status.record.text if mapper.status.record is not None else "the answer"
        _no_record(report, workflow_id, f"{where!r} is null, [] or {{}}")
        return None
    problems = mapper.problems(record)
    report.problems += [Finding(p.kind, p.detail) for p in problems]
    if problems:
        return None
    mapped = mapper.read(record)
    report.part = _part_json(mapped, client)
    return mapped


def _read_contract(status: int, body: bytes, report: Report, workflow_id: str) -> Mapped | None:
    if status == 404:
        _no_record(report, workflow_id, "HTTP 404")
        return None
    if status != 200:
        report.problems.append(Finding("bad_response", f"HTTP {status}"))
        return None
    try:
        answer = STATUS_READ.validate_json(body)
    except ValueError as exc:
        report.problems.append(Finding("bad_response", str(exc).splitlines()[0][:300]))
        return None
    if answer["workflow_id"] != workflow_id:
        report.problems.append(
            Finding("bad_response", f"answered for workflow {answer['workflow_id'][:140]!r}")
        )
        return None
    mapped = Mapped(answer["state"], answer["version"], answer["updated_at"], None, None, answer["state"])
    report.part = {"state": mapped.state, "version": mapped.version, "updated_at": mapped.updated_at}
    return mapped


def _part_json(mapped: Mapped, client: MappedClient) -> dict[str, Any]:
    part: dict[str, Any] = {
        "state": mapped.state,
        "raw_state": mapped.raw_state,
        "version": mapped.version,
        "updated_at": mapped.updated_at,
        "ordered_by": client.order,
    }
    if mapped.data is not None:
        part["data"] = mapped.data
    return part


async def _batch(client: ParticipantClient, workflow_id: str, single: Mapped | None, report: Report) -> None:
    """The batch request for the same id, compared with the single answer."""
    if isinstance(client, MappedClient):
        if client.mapper.batch is None:
            return
        path = client.batch_path([workflow_id])
    else:
        path = f"/status?workflow_id={_quoted(workflow_id)}"
    report.batch = {"url": client.spec.url + path}
    try:
        status, body, latency_ms = await _ask(client, path)
    except PartFailure as failure:
        report.problems.append(
            Finding("batch", f"the batch request failed: {failure.kind}: {failure.detail}")
        )
        return
    report.batch.update(status=status, latency_ms=round(latency_ms, 3), body=_shown(body))
    try:
        if isinstance(client, MappedClient):
            found = (
                client.read_batch(parse_json(body), {workflow_id}).get(workflow_id) if status == 200 else None
            )
        else:
            found = _contract_batch(status, body, workflow_id)
    except (MappingProblem, ValueError) as problem:
        detail = problem.detail if isinstance(problem, MappingProblem) else str(problem).splitlines()[0][:300]
        report.problems.append(Finding("batch", f"the batch answer does not map: {detail}"))
        return
    report.batch["part"] = (
        None
        if found is None
        else {"state": found.state, "version": found.version, "updated_at": found.updated_at}
    )
    if single is None:
        return
    if found is None:
        report.problems.append(
            Finding("batch", f"the batch answer has no record of {workflow_id!r}; the single one has")
        )
        return
    for key in ("state", "version", "updated_at"):
        one, many = getattr(single, key), getattr(found, key)
        if one != many:
            report.problems.append(
                Finding(
                    "batch", f"the batch answer disagrees with the single one: {key} {many!r}, not {one!r}"
                )
            )


def _contract_batch(status: int, body: bytes, workflow_id: str) -> Mapped | None:
    if status != 200:
        raise ValueError(f"HTTP {status}")
    for s in BATCH_READ.validate_json(body)["statuses"]:
        if s["workflow_id"] == workflow_id:
            return Mapped(s["state"], s["version"], s["updated_at"], None, None, s["state"])
    return None


def render(report: Report) -> str:
    """The report for a person."""
    lines = [f"participant {report.participant} ({'mapped' if report.mapped else 'contract status API'})"]
    shown_headers = f"  (headers: {', '.join(report.headers)})" if report.headers else ""
    lines.append(f"request     GET {report.request}{shown_headers}")
    if report.status is not None:
        lines.append(
            f"answer      HTTP {report.status} in {report.latency_ms:.1f} ms, {report.answer_bytes} bytes"
        )
        lines += [f"            {line}" for line in report.answer.splitlines()[:40]]
    if report.record is not None:
        lines.append(f"record      {json.dumps(report.record)[:SHOWN_BYTES]}")
    if report.part is not None:
        lines.append("part        " + ", ".join(f"{k} {json.dumps(v)}" for k, v in report.part.items()))
    if report.batch is not None:
        batch = report.batch
        status = f" → HTTP {batch['status']}" if "status" in batch else ""
        lines.append(f"batch       GET {batch['url']}{status}")
        if batch.get("part") is not None:
            lines.append("            " + ", ".join(f"{k} {json.dumps(v)}" for k, v in batch["part"].items()))
    if report.problems:
        lines.append(f"problems    {len(report.problems)}")
        lines += [f"  - {p.kind}: {p.detail}" for p in report.problems]
    else:
        lines.append("problems    none: the part maps cleanly")
    return "\n".join(lines)
