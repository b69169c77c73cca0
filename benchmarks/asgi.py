"""The aggregator served by uvicorn (its ASGI application) against the same aggregator served by
aiohttp (``python -m aggregator serve``): two rows, each a ratio to the aiohttp
server measured in the same run.

Both serve the packaged order-saga definition over the same four synthetic participants
(:mod:`benchmarks.refservers` ``synthetic --shape contract``, named order, payment, inventory
and shipping, each answering any id from memory after a fixed delay), one process each:

* ``aiohttp``: ``python -m aggregator serve`` (uvloop, :func:`contract.serve_app`);
* ``uvicorn``: ``python -m benchmarks._asgi_serve``: ``aggregator.asgi.create_app(agg,
  manage=True)`` on one uvicorn worker with ``loop="uvloop"`` and ``http="httptools"``.

Rows:

* **Cold-read throughput at 16 clients**: on-demand freshness, closed loop, 16 clients over 400
  distinct ids (:data:`benchmarks.latency.DISTINCT_IDS`), alternating rounds, medians.
* **Cache-hit throughput at 16 clients**: events freshness on the benchmark's own Mosquitto, as
  :mod:`benchmarks.latency`'s cache-hit row has it: every id read once, then 16 clients over the
  same 400 ids, every part a hit (the share of hits is counted from
  ``aggregator_cache_lookups_total``); the synthetic participants publish no events, so nothing
  invalidates a part and no read calls a participant.

Beside each: the serving process' CPU (user + system) per view, p50 and p99, participant calls
per view and the machine's busy share (no target).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from order_saga.broker import free_port

from ._cluster import KINDS, Cluster, drive, http_json, metric_sum
from ._stats import ratio
from .latency import DISTINCT_IDS, VIEW, Round, _alternate, _closed, _medians, _target

Progress = Callable[[str], None]

#: Every synthetic participant's fixed delay (no jitter), as in :mod:`benchmarks.mapping`.
DELAY_MS = 2.0
#: The servers compared, in the order of each row.
SERVERS = ("uvicorn", "aiohttp")
#: Both rows' target: the uvicorn server's throughput at least this share of aiohttp's.
BOUND = 0.9


@dataclass(frozen=True)
class Scale:
    """Rounds and seconds per closed-loop run."""

    rounds: int
    closed_s: float


FULL = Scale(rounds=9, closed_s=3.0)  # many short rounds: a burst of other work hits few
QUICK = Scale(rounds=2, closed_s=1.0)


def serve(cluster: Cluster, server: str, participants: dict[str, str], *, freshness: str) -> str:
    """The aggregator on ``server`` (``uvicorn`` or ``aiohttp``) with the packaged definition,
    these participant URLs and ``freshness`` (``events``: on the cluster's broker); its base URL
    once ``/readyz`` answers 200."""
    port = free_port()
    if server == "aiohttp":
        args = ["-m", "aggregator", "serve", "--port", str(port), "--log-level", "WARNING"]
    else:
        args = ["-m", "benchmarks._asgi_serve", "--port", str(port)]
    args += ["--freshness", freshness]
    for name, url in participants.items():
        args += ["--participant", f"{name}={url}"]
    if freshness == "events":
        assert cluster.broker is not None
        args += ["--broker", str(cluster.broker.url), "--prefix", "saga"]
    return cluster.process(args, name=f"agg-{server}-{freshness}", port=port)


def _check(url: str) -> None:
    """The aggregator answers a whole view of a completed order (not a cheaper error view, nor
    one with an anomaly)."""
    status, view = http_json(f"{url}/workflows/asgi-check")
    assert status == 200, (url, status)
    assert view["state"] == "COMPLETED", (url, view)
    assert view["complete"], (url, view)
    assert all(p.get("error") is None for p in view["parts"].values()), view
    assert not view["anomalies"], (url, view)


def _connected(url: str) -> bool:
    return bool(http_json(url + "/readyz")[1]["event_feed"]["connected"])


def _wait_connected(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _connected(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: the event feed is not up")
        time.sleep(0.1)


def measure(cluster: Cluster, *, scale: Scale, progress: Progress) -> dict[str, Any]:
    """Both rows, each server beside the other in alternating rounds."""
    progress("asgi: synthetic participants, Mosquitto, four aggregators")
    load_before = os.getloadavg()
    cluster.start_broker()
    participants = {name: cluster.synthetic("contract", name=name, latency_ms=DELAY_MS) for name in KINDS}
    cold = {s: serve(cluster, s, participants, freshness="on-demand") for s in SERVERS}
    hot = {s: serve(cluster, s, participants, freshness="events") for s in SERVERS}
    for url in hot.values():
        _wait_connected(url)
    for url in (*cold.values(), *hot.values()):
        _check(url)
    upstream = list(participants.values())
    participant_pids = [cluster.pid(u) for u in upstream]

    def closed(url: str) -> Callable[[], dict[str, float]]:
        return functools.partial(
            _closed,
            url + VIEW,
            concurrency=16,
            duration=scale.closed_s,
            cpu={"cpu_ms_per_view": [cluster.pid(url)], "participants_cpu_ms_per_view": participant_pids},
            upstream=upstream,
        )

    progress("asgi: cold reads, 16 clients over 400 distinct ids")
    c16 = _alternate({s: closed(cold[s]) for s in SERVERS}, scale.rounds)

    progress("asgi: cache-hit reads (events), 16 clients over 400 distinct ids")
    for url in hot.values():  # each id read once: every part kept, and no event changes it
        drive(
            {"mode": "closed", "url": url + VIEW, "concurrency": 16, "duration": 120, "ids": DISTINCT_IDS,
             "max_requests": len(DISTINCT_IDS)}
        )  # fmt: skip
    lookups = "aggregator_cache_lookups_total"
    before = {s: (metric_sum(u, lookups, result="hit"), metric_sum(u, lookups)) for s, u in hot.items()}
    hit = _alternate({s: closed(hot[s]) for s in SERVERS}, scale.rounds)
    share = {}
    for s, url in hot.items():
        hits, total = (
            metric_sum(url, lookups, result="hit") - before[s][0],
            metric_sum(url, lookups) - before[s][1],
        )
        share[s] = round(hits / total, 4) if total else math.nan
    return {
        "delay_ms": DELAY_MS,
        "ids": len(DISTINCT_IDS),
        "rounds": scale.rounds,
        "duration_s": scale.closed_s,
        # Other work on the machine, as the 1, 5 and 15 minute load averages before and after.
        "loadavg": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "cold_c16": {"median": _medians(c16), "per_round": c16},
        "cache_hit_c16": {"median": _medians(hit), "hit_share": share, "per_round": hit},
    }


def _note(u: dict[str, float], a: dict[str, float], rounds: list[Round]) -> str:
    """The figures beside a row's throughput, uvicorn's / aiohttp's, and the spread of the
    throughput ratio over the rounds."""
    ratios = [ratio(r["uvicorn"]["rps"], r["aiohttp"]["rps"]) for r in rounds]
    return (
        f"throughput ratio per round {min(ratios)} to {max(ratios)} over {len(ratios)} rounds; "
        f"serving process CPU {u['cpu_ms_per_view']} / {a['cpu_ms_per_view']} ms per view; "
        f"p50 {u['p50']} / {a['p50']} ms, p99 {u['p99']} / {a['p99']} ms; participant calls "
        f"{u['upstream_calls_per_view']} / {a['upstream_calls_per_view']} per view; "
        f"machine busy {u['machine_busy']:.0%} / {a['machine_busy']:.0%}"
    )


def targets(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The two ASGI rows: uvicorn's throughput against aiohttp's, same aggregator, same run."""
    cold, hit = m["cold_c16"]["median"], m["cache_hit_c16"]["median"]
    share = m["cache_hit_c16"]["hit_share"]
    where = f"16 clients, {m['ids']} distinct ids, order saga over 4 synthetic participants at {m['delay_ms']:g} ms"
    server = "uvicorn (ASGI app, uvloop, httptools, 1 worker) vs aiohttp (python -m aggregator serve)"
    return {
        "asgi_cold_throughput_c16": _target(
            f"cold-read throughput (on-demand), {where}: {server}",
            cold["uvicorn"]["rps"], cold["aiohttp"]["rps"], "req/s", at_least=True, bound=BOUND,
            note=_note(cold["uvicorn"], cold["aiohttp"], m["cold_c16"]["per_round"]),
        ),
        "asgi_cache_hit_throughput_c16": _target(
            f"cache-hit throughput (events mode, every id read once first), {where}: {server}",
            hit["uvicorn"]["rps"], hit["aiohttp"]["rps"], "req/s", at_least=True, bound=BOUND,
            note=_note(hit["uvicorn"], hit["aiohttp"], m["cache_hit_c16"]["per_round"])
            + f"; part lookups that hit {share['uvicorn']:.1%} / {share['aiohttp']:.1%}",
        ),
    }  # fmt: skip


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """Both rows, each beside the aiohttp server measured in the same run."""
    with Cluster() as cluster:
        results = measure(cluster, scale=QUICK if quick else FULL, progress=progress)
    results["targets"] = targets(results)
    return results


#: Progress steps :func:`run` reports.
STEPS = 3
