"""A redrive job over many workflows: how long it takes at its rate, and each participant's rate.

The four participants (``python -m participants NAME``, real processes on the benchmark's own
Mosquitto) start on SQLite databases seeded directly with in-flight workflows (as
:mod:`benchmarks.fleet` seeds them: placing them through the saga is not what is measured).
The aggregator is ``python -m aggregator serve`` with the packaged definition (on-demand
freshness). One job, ``POST /redrives`` with a filter on every derived state (all of the
seeded workflows), ``rate_per_s`` and ``max`` the number seeded, runs to its end while each
participant's ``republish_requests`` counter (its ``/healthz``) is read every second: the
highest count per second any participant saw is its rate, measured from its side.

Row: the job finishes within 1.2 times its ideal time (workflows / rate), and no participant
was asked to republish more often than the rate (a second's count at most the rate plus one,
for windows that do not fall on the pace's ticks).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aggregator import load_definition
from aggregator._fleet import derived_states
from order_saga.broker import free_port

from ._cluster import KINDS, Cluster
from .fleet import seed
from .latency import _target

Progress = Callable[[str], None]
#: The job's time: at most this many times workflows / rate.
BOUND = 1.2


@dataclass(frozen=True)
class Scale:
    workflows: int
    rate_per_s: float


FULL = Scale(workflows=10_000, rate_per_s=200)
QUICK = Scale(workflows=500, rate_per_s=200)


def _json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _seconds(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def measure(cluster: Cluster, *, scale: Scale, progress: Progress) -> dict[str, Any]:
    progress(f"redrive: seeding {scale.workflows} workflows")
    seed(cluster.dir, scale.workflows)
    broker = cluster.start_broker()
    urls = {}
    for name in KINDS:
        port = free_port()
        args = ["-m", "participants", name, "--port", str(port), "--broker", broker, "--prefix", "redrive"]
        args += ["--db", str(cluster.dir / f"{name}.sqlite3"), "--log-level", "WARNING"]
        urls[name] = cluster.process(args, name=f"redrive-{name}", port=port)
    agg = cluster.aggregator(urls, name="redrive-aggregator")
    states = derived_states(load_definition())

    def republished() -> dict[str, tuple[int, float]]:
        """Each participant's republish requests so far, and when (midway through asking it)."""
        found = {}
        for name, url in urls.items():
            asked = time.monotonic()
            count = int(_json(f"{url}/healthz")["counts"].get("republish_requests", 0))
            found[name] = (count, (asked + time.monotonic()) / 2)
        return found

    progress(f"redrive: a job over {scale.workflows} at {scale.rate_per_s:g}/s")
    before = republished()
    job_id = _json(
        f"{agg}/redrives",
        {"filter": {"state": states}, "rate_per_s": scale.rate_per_s, "max": scale.workflows},
    )["id"]
    peaks = dict.fromkeys(urls, 0.0)
    excess = dict.fromkeys(urls, 0.0)
    last = before
    while True:
        time.sleep(1.0)
        now = republished()
        for name in urls:
            count, spent = now[name][0] - last[name][0], now[name][1] - last[name][1]
            peaks[name] = max(peaks[name], count / spent)
            # A pace of r a second admits at most r * t + 1 starts in any t seconds.
            excess[name] = max(excess[name], count - scale.rate_per_s * spent)
        last = now
        job = _json(f"{agg}/redrives/{job_id}")
        if job["state"] != "running":
            break
    took = _seconds(job["finished"]) - _seconds(job["cutoff"])
    after = republished()
    results: dict[str, int] = {}
    for r in job["results"]:
        results[r["result"]] = results.get(r["result"], 0) + 1
    return {
        "workflows": scale.workflows,
        "rate_per_s": scale.rate_per_s,
        "state": job["state"],
        "selected": job["selected"],
        "done": job["done"],
        "failed": job["failed"],
        "results": results,
        "seconds": round(took, 2),
        "ideal_s": round(scale.workflows / scale.rate_per_s, 2),
        "republish_requests": {n: after[n][0] - before[n][0] for n in urls},
        "peak_per_s": {n: round(v, 1) for n, v in peaks.items()},
        "peak_excess": {n: round(v, 1) for n, v in excess.items()},
    }


def targets(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    n, rate = m["workflows"], m["rate_per_s"]
    over = max(m["peak_excess"].values()) > 2  # a pace's tick and a request on a window's edge
    row = _target(
        f"a redrive job over {n:,} workflows at rate_per_s={rate:g} (seeded in-flight workflows, 4 participant "
        "processes, on-demand freshness): time to done",
        m["seconds"], m["ideal_s"], "s", at_least=False, bound=BOUND,
        note=f"{m['selected']:,} selected, {m['done']:,} done, {m['failed']} failed ({m['results']}); each "
        f"participant's republish requests per second, highest 1-s window from its /healthz: "
        + ", ".join(f"{k} {v:g}" for k, v in m["peak_per_s"].items())
        + f" (limit {rate:g} a second, at most r·t + 2 in any window: " + ("kept" if not over else "**exceeded**") + ")",
    )  # fmt: skip
    row["met"] = bool(row["met"] and not over and m["done"] == n and m["failed"] == 0)
    return {"redrive_job_10k": row} if n >= 10_000 else {"redrive_job": row}


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    with Cluster() as cluster:
        results = measure(cluster, scale=QUICK if quick else FULL, progress=progress)
    results["targets"] = targets(results)
    return results


STEPS = 2
