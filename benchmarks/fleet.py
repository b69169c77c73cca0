"""Fleet queries over many in-flight workflows: a page of ``GET /workflows?state=IN_PROGRESS&limit=100``
beside one 100-id batch read measured in the same run, and ``GET /summary`` against its bound.

The four participants (``python -m participants NAME``, real processes on the benchmark's own
Mosquitto) start on SQLite databases seeded directly beforehand: placing 100,000 orders through
the saga would take the better part of an hour, and what is measured here is reading them, not
making them. The seeded workflows are in flight in the packaged saga's shapes, each a minute or
more old: 75% in progress (waiting on payment, inventory, shipping or the order service, as
many each), 10% with a payment declined and the order not yet cancelled, 10%
compensating and 5% failed (the order cancelled). The aggregator is ``python -m aggregator
serve`` with the packaged definition in ``on-demand`` freshness: every view asks every
participant, through its batch endpoint.

Rows:

* **Fleet page**: ``state=IN_PROGRESS&limit=100``, each request going on from the previous
  page's ``next`` (cold pages, through the listing), alternating with the reference: one
  ``GET /workflows?id=…`` of 100 random in-flight ids. Target: p50 at most 5 times the reference's.
* **Summary**: ``GET /summary`` once, its time against its own bound
  (:data:`aggregator._fleet.SUMMARY_TIME_S`), with what it scanned and whether it says the count
  is complete (it must say so exactly when it went through the whole listing).
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator import _fleet
from contract import iso
from order_saga.broker import free_port
from participants.store import Store

from ._cluster import KINDS, Cluster
from ._stats import summary
from .latency import _target

Progress = Callable[[str], None]

#: Shapes seeded: each participant's history (its last entry is its state) and the share of workflows.
SHAPES: list[tuple[dict[str, list[str]], float]] = [
    ({"order": ["PENDING"]}, 0.1875),
    ({"order": ["PENDING"], "payment": ["AUTHORIZED"]}, 0.1875),
    ({"order": ["PENDING"], "payment": ["AUTHORIZED"], "inventory": ["RESERVED"]}, 0.1875),
    (
        {
            "order": ["PENDING"],
            "payment": ["AUTHORIZED"],
            "inventory": ["RESERVED"],
            "shipping": ["SCHEDULED"],
        },
        0.1875,
    ),
    ({"order": ["PENDING"], "payment": ["DECLINED"]}, 0.10),
    ({"order": ["PENDING", "CANCELLED"], "payment": ["AUTHORIZED"], "inventory": ["REJECTED"]}, 0.10),
    ({"order": ["PENDING", "CANCELLED"], "payment": ["DECLINED"]}, 0.05),
]
#: The fleet page's target: its p50 at most this many times one 100-id batch read's.
BOUND = 5.0
#: The summary's target: its time at most this share of its own bound (the last batches in
#: flight when the bound passes finish first).
SUMMARY_SLACK = 1.1


@dataclass(frozen=True)
class Scale:
    """Workflows seeded, and rounds of each read."""

    workflows: int
    rounds: int


FULL = Scale(workflows=100_000, rounds=40)
QUICK = Scale(workflows=3_000, rounds=5)


def seed(directory: Path, count: int) -> list[str]:
    """Each participant's database (``{name}.sqlite3``) with ``count`` in-flight workflows, oldest
    first, one a millisecond, ending a minute ago; the ids."""
    rng = random.Random(7)
    weights = [share for _, share in SHAPES]
    shapes = rng.choices(range(len(SHAPES)), weights=weights, k=count)
    start = time.time() - 60 - count / 1000
    ids = [f"fleet-{i:06d}" for i in range(count)]
    times = [iso(datetime.fromtimestamp(start + i / 1000, UTC)) for i in range(count)]
    for name in KINDS:
        path = directory / f"{name}.sqlite3"
        Store(path).close()  # the schema
        rows, history = [], []
        for workflow_id, at, shape in zip(ids, times, shapes, strict=True):
            states = SHAPES[shape][0].get(name)
            if states:
                rows.append((workflow_id, states[-1], len(states), at, "{}"))
                history += [(workflow_id, v, s, at) for v, s in enumerate(states, 1)]
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.executemany("INSERT INTO workflows VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO history (workflow_id, version, state, at) VALUES (?, ?, ?, ?)", history
            )
    return ids


def _get(url: str) -> tuple[float, Any]:
    """Milliseconds a GET took, and its JSON (it must answer 200)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = json.loads(response.read())
        assert response.status == 200, (url, response.status)
    return (time.perf_counter() - started) * 1000, body


def measure(cluster: Cluster, *, scale: Scale, progress: Progress) -> dict[str, Any]:
    """Both rows over ``scale.workflows`` seeded workflows."""
    progress(f"fleet: seeding {scale.workflows} workflows")
    seeded_s = time.monotonic()
    ids = seed(cluster.dir, scale.workflows)
    seeded_s = time.monotonic() - seeded_s
    broker = cluster.start_broker()
    urls = {}
    for name in KINDS:
        port = free_port()
        args = ["-m", "participants", name, "--port", str(port), "--broker", broker, "--prefix", "fleet"]
        args += ["--db", str(cluster.dir / f"{name}.sqlite3"), "--log-level", "WARNING"]
        urls[name] = cluster.process(args, name=f"fleet-{name}", port=port)
    agg = cluster.aggregator(urls, name="fleet-aggregator")
    rng = random.Random(11)

    progress("fleet: pages of state=IN_PROGRESS beside 100-id batch reads")
    _get(f"{agg}/workflows?state=IN_PROGRESS&limit=100")  # connections up, caches of the parsers warm
    pages: list[float] = []
    batches: list[float] = []
    scanned: list[int] = []
    exhausted = 0
    cursor = ""
    for _ in range(scale.rounds):
        chosen = rng.sample(ids, 100)
        took, body = _get(f"{agg}/workflows?" + "&".join(f"id={w}" for w in chosen))
        assert len(body["views"]) == 100, body.get("not_found")
        batches.append(took)
        took, page = _get(f"{agg}/workflows?state=IN_PROGRESS&limit=100{cursor}")
        assert len(page["views"]) == 100 or page["budget_exhausted"] or page["next"] is None, page["scanned"]
        assert all(v["state"] == "IN_PROGRESS" for v in page["views"])
        pages.append(took)
        scanned.append(page["scanned"])
        exhausted += page["budget_exhausted"]
        cursor = "" if page["next"] is None else f"&cursor={page['next']}"

    progress("fleet: summary")
    took, counted = _get(f"{agg}/summary")
    return {
        "workflows": scale.workflows,
        "seeded_s": round(seeded_s, 1),
        "rounds": scale.rounds,
        "page": {
            "stats": summary(pages),
            "scanned_p50": sorted(scanned)[len(scanned) // 2],
            "budget_exhausted": exhausted,
        },
        "batch_100": {"stats": summary(batches)},
        "summary": {
            "ms": round(took, 1),
            "bound_ms": _fleet.SUMMARY_TIME_S * 1000,
            "budget": _fleet.SUMMARY_BUDGET,
            "scanned": counted["scanned"],
            "complete": counted["complete"],
            "counted": sum(counted["counts"].values()),
            # It says complete exactly when it went through every in-flight workflow.
            "says_so": counted["complete"] == (counted["scanned"] == scale.workflows),
        },
    }


def targets(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The two rows, each against its same-run reference (the batch read) or its own bound."""
    n = m["workflows"]
    where = (
        f"{n:,} in-flight workflows seeded into the participants' SQLite databases (75% in progress), "
        "on-demand freshness, 4 participant processes"
    )
    page, batch, s = m["page"]["stats"], m["batch_100"]["stats"], m["summary"]
    complete = "complete" if s["complete"] else "not complete"
    summary_row = _target(
        f"GET /summary over {where}: time against its bound",
        s["ms"], s["bound_ms"], "ms", at_least=False, bound=SUMMARY_SLACK,
        note=f"scanned {s['scanned']:,} of {n:,} (budget {s['budget']:,}), says {complete}, which is "
        + ("right" if s["says_so"] else "**wrong**"),
    )  # fmt: skip
    summary_row["met"] = bool(summary_row["met"] and s["says_so"])
    return {
        "fleet_page_in_progress_100": _target(
            f"GET /workflows?state=IN_PROGRESS&limit=100 (p50, each page from the last one's next) over {where}",
            page["p50"], batch["p50"], "ms", at_least=False, bound=BOUND,
            note=f"one 100-id batch read (GET /workflows?id=…, random in-flight ids), {m['rounds']} rounds each, "
            f"alternating; page p99 {page['p99']} ms, batch p99 {batch['p99']} ms; listed workflows per page "
            f"p50 {m['page']['scanned_p50']}; pages ended by the budget {m['page']['budget_exhausted']}",
        ),
        "fleet_summary": summary_row,
    }  # fmt: skip


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """Both rows; the quick run seeds far fewer workflows (its rows say how many)."""
    with Cluster() as cluster:
        results = measure(cluster, scale=QUICK if quick else FULL, progress=progress)
    results["targets"] = targets(results)
    return results


#: Progress steps :func:`run` reports.
STEPS = 3
