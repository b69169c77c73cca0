"""The load generator, run as its own process so that it never shares a core's event loop with
what it measures: ``python -m benchmarks._driver SPEC_JSON`` prints a JSON result.

Modes:

* ``open``: requests at Poisson arrival times (``rate`` per second for ``duration`` s). Each
  latency is measured from the request's *scheduled* time, so a slow server cannot slow the
  schedule down and hide its own latency (no coordinated omission).
* ``closed``: ``concurrency`` loops as fast as answers come, for ``duration`` s (or until
  ``max_requests`` answers): throughput and each request's latency. With ``ids``, the loops
  take the ids in turn from one shared cycle, so requests in flight together never share an
  id (one id would measure coalescing, not the fan-out) as long as there are more ids than loops.
  Over the same window it reads the whole machine's busy share and, for each name of
  ``cpu_pids``, the CPU seconds those processes used (``/proc``).
* ``burst``: ``count`` requests started at once.
* ``mix``: the staleness workload: orders posted at ``write_rate`` (Poisson) and views read at
  ``read_rate`` from the most recent orders, every read recorded with its send time and the
  part versions and sources it saw, every accepted order with the time its POST was sent.
  With ``kill_pid``, that process is SIGKILLed ``kill_after`` s into the load.
* ``trips``: the trip example's workload: trips booked (``POST /trips`` on ``trips_url``) at a
  steady ``trip_rate``, their bodies cycling through ``outcomes``, and views read at a steady
  ``read_rate`` from the most recent trips, every read recorded with its status and the
  source of each part of the view.

A ``fanout`` list instead of one URL makes each request a concurrent GET of every URL there,
timed to the slowest answer (the direct-call reference).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import sys
import time
import uuid
from typing import Any

import aiohttp

from ._proc import cpu_seconds, machine_cpu


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.read()


async def _request(session: aiohttp.ClientSession, spec: dict[str, Any], wf: str | None = None) -> int:
    headers = spec.get("headers", {})
    # "{id}" in a URL takes ``wf`` or else a random one of spec["ids"], so reads do not all share one flight.
    if wf is None:
        wf = random.choice(spec["ids"]) if "ids" in spec else ""
    if "fanout" in spec:
        results = await asyncio.gather(
            *(_get(session, u.replace("{id}", wf), headers) for u in spec["fanout"])
        )
        return max(status for status, _ in results)
    status, _ = await _get(session, spec["url"].replace("{id}", wf), headers)
    return status


async def run_open(session: aiohttp.ClientSession, spec: dict[str, Any]) -> dict[str, Any]:
    rate, duration = spec["rate"], spec["duration"]
    rng = random.Random(spec.get("seed", 1))
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []

    async def one(at: float) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            status = await _request(session, spec)
        except aiohttp.ClientError:
            status = 599
        if status >= 400 and status != 404:
            errors += 1
        latencies.append((loop.time() - at) * 1000)

    at = start
    while True:
        at += rng.expovariate(rate)
        if at - start > duration:
            break
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return {"latencies_ms": latencies, "errors": errors, "count": len(latencies)}


async def run_closed(session: aiohttp.ClientSession, spec: dict[str, Any]) -> dict[str, Any]:
    deadline = time.perf_counter() + spec["duration"]
    budget = spec.get("max_requests")
    ids = itertools.cycle(spec["ids"]) if "ids" in spec else itertools.repeat("")
    latencies: list[float] = []
    errors = not_found = 0

    async def loop_() -> None:
        nonlocal errors, not_found, budget
        while time.perf_counter() < deadline and (budget is None or budget > 0):
            if budget is not None:
                budget -= 1
            t0 = time.perf_counter()
            try:
                status = await _request(session, spec, next(ids))
            except aiohttp.ClientError:
                status = 599
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += status >= 400 and status != 404
            not_found += status == 404

    pids: dict[str, list[int]] = spec.get("cpu_pids", {})
    cpu_before = {name: sum(map(cpu_seconds, group)) for name, group in pids.items()}
    busy_before, total_before = machine_cpu()
    started = time.perf_counter()
    await asyncio.gather(*(loop_() for _ in range(spec["concurrency"])))
    elapsed = time.perf_counter() - started
    busy, total = machine_cpu()
    cpu_s = {name: sum(map(cpu_seconds, group)) - cpu_before[name] for name, group in pids.items()}
    done = len(latencies)
    return {
        "count": done,
        "errors": errors,
        "not_found": not_found,
        "elapsed_s": elapsed,
        "rps": done / elapsed,
        "latencies_ms": latencies,
        "machine_busy": (busy - busy_before) / max(1e-9, total - total_before),
        "cpu_s": cpu_s,
    }


async def run_burst(session: aiohttp.ClientSession, spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()

    async def one() -> tuple[int, float]:
        status = await _request(session, spec)
        return status, (time.perf_counter() - started) * 1000

    results = await asyncio.gather(*(one() for _ in range(spec["count"])))
    return {
        "statuses": sorted({s for s, _ in results}),
        "latencies_ms": [t for _, t in results],
        "count": len(results),
    }


async def run_mix(session: aiohttp.ClientSession, spec: dict[str, Any]) -> dict[str, Any]:
    """Writes (orders) and reads of recent orders, each read recorded for the staleness analysis."""
    rng = random.Random(spec.get("seed", 2))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    recent: list[str] = []
    written: list[str] = []
    reads: list[dict[str, Any]] = []
    posted: dict[str, float] = {}  # workflow id → wall time its POST was sent
    failed_writes: dict[int, int] = {}
    refused: list[float] = []  # when each order that was not accepted was sent
    # Mostly sagas that complete, and one of each compensation.
    outcomes = ["happy", "happy", "happy", "declined", "out-of-stock", "unshippable"]
    # Imported here, by the one mode that writes: the example saga (and the participants framework
    # under it) would double the start-up of every read-only run, and a benchmark starts dozens.
    from order_saga import SAMPLES

    async def write(at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        wf = f"st-{uuid.uuid4().hex[:12]}"
        body = SAMPLES[rng.choice(outcomes)].body(order_id=wf)
        posted[wf] = time.time()
        try:
            async with session.post(spec["order_url"] + "/orders", json=body) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 599  # nothing answered (a server down)
        if status != 202:
            failed_writes[status] = failed_writes.get(status, 0) + 1
            refused.append(posted.pop(wf))
            return
        written.append(wf)
        recent.append(wf)
        del recent[: -spec.get("recent", 5)]

    async def read(at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        if not recent:
            return
        wf = rng.choice(recent)
        sent = time.time()
        t0 = loop.time()
        body = None
        try:
            async with session.get(f"{spec['url']}/workflows/{wf}", headers=spec.get("headers", {})) as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
                status = resp.status
        except aiohttp.ClientError:
            status = 599
        record = {"wf": wf, "sent": sent, "latency_ms": (loop.time() - t0) * 1000, "status": status}
        if body:
            record["staleness_ms"] = body["staleness_ms"]
            record["parts"] = {n: [p["version"] or 0, p["source"]] for n, p in body["parts"].items()}
        reads.append(record)

    killed: list[float] = []
    if "kill_pid" in spec:  # a crash at a known point of the load, timed from the driver's own start

        def kill() -> None:
            killed.append(time.time())
            os.kill(spec["kill_pid"], signal.SIGKILL)

        loop.call_at(start + spec["kill_after"], kill)
    tasks = []
    for rate, fn in ((spec["write_rate"], write), (spec["read_rate"], read)):
        at = start
        while True:
            at += rng.expovariate(rate)
            if at - start > spec["duration"]:
                break
            tasks.append(asyncio.create_task(fn(at)))
    await asyncio.gather(*tasks)
    return {
        "written": written,
        "posted": {wf: posted[wf] for wf in written},
        "failed_writes": {str(k): v for k, v in failed_writes.items()},
        "refused_at": refused,
        "killed_at": killed[0] if killed else None,
        "reads": reads,
    }


async def run_trips(session: aiohttp.ClientSession, spec: dict[str, Any]) -> dict[str, Any]:
    """Trips booked at a steady rate and views of recent trips read at a steady rate."""
    rng = random.Random(spec.get("seed", 3))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    recent: list[str] = []
    booked: dict[str, str] = {}  # trip id → outcome
    failed_writes = 0
    reads: list[dict[str, Any]] = []
    outcomes: dict[str, dict[str, Any]] = spec["outcomes"]
    cycle = itertools.cycle(outcomes)

    async def write(at: float, outcome: str) -> None:
        nonlocal failed_writes
        await asyncio.sleep(max(0.0, at - loop.time()))
        wf = f"bt-{uuid.uuid4().hex[:12]}"
        try:
            async with session.post(
                spec["trips_url"] + "/trips", json={"trip_id": wf, **outcomes[outcome]}
            ) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 599
        if status != 201:
            failed_writes += 1
            return
        booked[wf] = outcome
        recent.append(wf)
        del recent[: -spec.get("recent", 5)]

    async def read(at: float) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        if not recent:
            return
        wf = rng.choice(recent)
        t0 = loop.time()
        record: dict[str, Any] = {"wf": wf}
        try:
            async with session.get(f"{spec['url']}/workflows/{wf}") as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
                record["status"] = resp.status
        except aiohttp.ClientError:
            record["status"], body = 599, None
        record["latency_ms"] = (loop.time() - t0) * 1000
        if body:
            record["state"] = body["state"]
            record["sources"] = sorted({p["source"] for p in body["parts"].values()})
        reads.append(record)

    tasks = []
    for i in range(int(spec["duration"] * spec["trip_rate"])):
        tasks.append(asyncio.create_task(write(start + i / spec["trip_rate"], next(cycle))))
    for i in range(int(spec["duration"] * spec["read_rate"])):
        tasks.append(asyncio.create_task(read(start + (i + 0.5) / spec["read_rate"])))
    await asyncio.gather(*tasks)
    return {"booked": booked, "failed_writes": failed_writes, "reads": reads}


async def main() -> None:
    spec = json.loads(sys.argv[1])
    connector = aiohttp.TCPConnector(limit=spec.get("connections", 256))
    async with aiohttp.ClientSession(connector=connector) as session:
        runner = {
            "open": run_open,
            "closed": run_closed,
            "burst": run_burst,
            "mix": run_mix,
            "trips": run_trips,
        }[spec["mode"]]
        result = await runner(session, spec)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
