"""``python -m aggregator get ID``, ``redrive ID`` and ``redrive --stalled``: a workflow's view, a
redrive, or a redrive job followed to its end, for a person."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from contract.cli import http_url


def render(view: dict[str, Any]) -> str:
    """A view as a few aligned lines of text."""
    lines = [
        f"{view['workflow_id']}  ({view['workflow']})",
        f"  state     {view['state']}" + (f"   step: {view['step']}" if view.get("step") else ""),
        f"  complete  {'yes' if view['complete'] else 'NO: some required parts are missing'}",
        f"  staleness at most {view['staleness_ms']} ms   (generated {view['generated_at']})",
        "  parts:",
    ]
    for name, part in view["parts"].items():
        state = part["state"] or "-"
        version = f"v{part['version']}" if part["version"] is not None else ""
        latency = f"{part['latency_ms']:.1f} ms" if part["latency_ms"] is not None else ""
        error = f"error: {part['error']}" if part["error"] else ""
        if part.get("detail"):  # what a mapped participant's answer lacked
            error += f" ({part['detail']})"
        lines.append(
            f"    {name:<12} {state:<12} {version:<5} {part['source']:<6} {latency:<10} {error}".rstrip()
        )
    for anomaly in view["anomalies"]:
        lines.append(f"  anomaly: {anomaly.get('detail', anomaly)}")
    return "\n".join(lines)


async def wait_for_state(
    http: aiohttp.ClientSession,
    url: str,
    expected: str,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The view at ``url`` once it is ``expected`` and complete (read with ``no-cache``, and
    ``headers``), or the last one read (None if none) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] | None = None
    sent = {**(headers or {}), "Cache-Control": "no-cache"}
    while time.monotonic() < deadline:
        async with http.get(url, headers=sent) as resp:
            if resp.status == 200:
                body = await resp.json()
                if body["state"] == expected and body["complete"]:
                    return body
        await asyncio.sleep(0.05)
    return body


async def get_command(url: str, workflow_id: str, *, as_json: bool, token: str | None) -> int:
    """Fetch and print one view; exit 0 when shown, 1 when the aggregator answered an error, 2 when unreachable."""
    status, body, reason = await _call(
        "GET", url, f"/workflows/{quote(workflow_id, safe='')}", token, verb="get"
    )
    if status is None:
        return 2
    if status != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        print(f"{workflow_id}: HTTP {status} {reason}" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 1
    if not isinstance(body, dict):
        print(f"{workflow_id}: {url} did not answer with a view (is it an aggregator?)", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2) if as_json else render(body))
    return 0


async def redrive_command(url: str, workflow_id: str, *, token: str | None) -> int:
    """Redrive one workflow and print what each participant answered; 0 when all republished."""
    path = f"/workflows/{quote(workflow_id, safe='')}/redrive"
    status, body, reason = await _call("POST", url, path, token, verb="redrive")
    if status is None:
        return 2
    if status != 202 or not isinstance(body, dict):
        detail = body.get("detail") if isinstance(body, dict) else None
        print(f"{workflow_id}: HTTP {status} {reason}" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 1
    failed = 0
    for name, answer in body.get("participants", {}).items():
        if "republished" in answer:
            print(f"{name:<12} republished {answer['republished']} event(s)")
        else:
            failed += 1
            print(f"{name:<12} FAILED: {answer.get('error')} {answer.get('detail', '')}".rstrip())
    return 1 if failed else 0


#: How often ``redrive --stalled`` asks how its job is going.
JOB_POLL_S = 0.5
#: Results printed at the end of a job, at most (the failed ones first).
SHOWN_RESULTS = 50


async def redrive_job_command(
    url: str, *, token: str | None, dry_run: bool, rate_per_s: float | None, max_workflows: int | None
) -> int:
    """Start a redrive job over the stalled workflows, print its progress as it changes and its
    results; 0 when it ended without failures, 1 with failures (or cancelled), 2 when the
    aggregator cannot be asked or refuses the job (a 4xx: the request or the token)."""
    request: dict[str, Any] = {"filter": {"stalled": True}, "dry_run": dry_run}
    if rate_per_s is not None:
        request["rate_per_s"] = rate_per_s
    if max_workflows is not None:
        request["max"] = max_workflows
    status, body, reason = await _call(
        "POST", url, "/redrives", token, verb="start a redrive job at", json_body=request
    )
    if status is None:
        return 2
    if status != 202 or not isinstance(body, dict) or "id" not in body:
        detail = body.get("detail") if isinstance(body, dict) else None
        print(f"redrive: HTTP {status} {reason}" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 2 if 400 <= status < 500 and status != 429 else 1
    job_id = str(body["id"])
    print(f"job {job_id}: workflows last changed before {body['cutoff']}" + (" (dry run)" if dry_run else ""))
    shown: tuple[Any, ...] | None = None
    while True:
        status, job, reason = await _call(
            "GET", url, f"/redrives/{quote(job_id, safe='')}", token, verb="follow"
        )
        if status is None:
            return 2
        if status != 200 or not isinstance(job, dict):
            print(f"redrive: job {job_id}: HTTP {status} {reason}", file=sys.stderr)
            return 1
        progress = (job["state"], job["selected"], job["done"], job["failed"])
        if progress != shown:
            shown = progress
            print(
                f"  {job['state']}: {job['selected']} selected, {job['done']} done, {job['failed']} failed",
                flush=True,
            )
        if job["state"] != "running":
            break
        await asyncio.sleep(JOB_POLL_S)
    results = sorted(job["results"], key=lambda r: r["result"] != "failed")
    for result in results[:SHOWN_RESULTS]:
        print(f"  {result['workflow_id']:<24} {result['result']:<20} {result['detail']}".rstrip())
    if len(results) > SHOWN_RESULTS:
        print(f"  … and {len(results) - SHOWN_RESULTS} more (GET /redrives/{job_id})")
    if job.get("error"):
        print(f"  stopped early: {job['error']}")
    redriven = sum(1 for r in job["results"] if r["result"] in ("republished", "nothing_to_republish"))
    print(
        f"{job['state']}: {job['selected']} selected, "
        + ("nothing redriven (dry run)" if dry_run else f"{redriven} redriven, {job['failed']} failed")
    )
    return 0 if job["state"] == "done" and not job["failed"] and not job.get("error") else 1


async def _call(
    method: str, url: str, path: str, token: str | None, *, verb: str, json_body: Any = None
) -> tuple[int | None, Any, str]:
    """One request to the aggregator: (status, JSON body or None, reason); status None if unreachable."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = f"{http_url(url)}{path}"  # "localhost:8000" means the aggregator there
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.request(method, target, headers=headers, json=json_body) as resp,
        ):
            raw = await resp.read()
            status, reason = resp.status, resp.reason or ""
    except TimeoutError:
        print(f"cannot {verb} {target}: no answer within 30 s", file=sys.stderr)
        return None, None, ""
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        print(f"cannot {verb} {target}: {_reason(exc)}", file=sys.stderr)
        return None, None, ""
    try:
        return status, json.loads(raw) if raw else None, reason
    except ValueError:
        return status, None, reason


def _reason(exc: BaseException) -> str:
    """What went wrong, in words (aiohttp's messages often repeat the URL, or are empty)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        return os.strerror(error.errno) if error.errno else str(error) or "connection failed"
    if isinstance(exc, aiohttp.InvalidURL):
        return "not a valid URL"
    return str(exc) or type(exc).__name__
