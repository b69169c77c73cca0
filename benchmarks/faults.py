"""Fault runs: the broker loses what it holds while sagas run; every saga must still finish.

Real processes: the broker, the four participants, ``python -m aggregator serve --redrive
auto``. Orders are placed through the order service, and 0.4 s in:

- ``mosquitto``: Mosquitto is SIGKILLed (it loses what it had acknowledged but not yet
  saved) and restarted 0.5 s later;
- ``nats``: on a 3-node NATS JetStream cluster (MQTT listeners, ``stream_replicas: 3``), with
  every participant given the three node URLs, the node they are all connected to is
  SIGKILLed and stays down.

Reported for each: sagas that reached their expected end state, how long after the fault the
last one did, redrives sent, duplicates the participants' inboxes dropped, and whether every
participant applied exactly the events the sagas need (nothing lost, nothing applied twice).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker, NatsCluster

from ._cluster import Cluster, http_json, metric_sum

Progress = Callable[[str], None]

STALL_AFTER_MS = 2000
KILL_AFTER_S = 0.4
DOWN_S = 0.5
DEADLINE_S = 180.0
#: The fault runs: name → (broker, redrive). On NATS, once without redrive: what failover alone does.
RUNS = {"mosquitto": ("mosquitto", "auto"), "nats": ("nats", "auto"), "nats_no_redrive": ("nats", "off")}


def _counts(urls: dict[str, str]) -> dict[str, dict[str, int]]:
    return {name: http_json(f"{url}/healthz")[1]["counts"] for name, url in urls.items()}


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """Each of :data:`RUNS` during ``600`` sagas (60 in a quick run)."""
    return {
        name: run_one(kind, redrive=redrive, quick=quick, progress=progress)
        for name, (kind, redrive) in RUNS.items()
    }


def run_one(kind: str, *, redrive: str, quick: bool, progress: Progress) -> dict[str, Any]:
    """One fault during ``600`` sagas (60 in a quick run) on broker ``kind``, ``mosquitto`` or ``nats``."""
    sagas = 60 if quick else 600
    outcomes = list(itertools.islice(itertools.cycle(SAMPLES), sagas))
    with Cluster() as cluster:
        cluster.start_broker(kind)
        broker = cluster.broker
        assert broker is not None
        (group,) = cluster.saga(prefix="f-")
        agg = cluster.aggregator(group, name="agg-faults", stall_after_ms=STALL_AFTER_MS, redrive=redrive)
        before = _counts(group)
        fault = (
            "broker SIGKILLed, restarted" if kind == "mosquitto" else "the node in use SIGKILLed, left down"
        )
        progress(f"faults ({kind}, redrive {redrive}): {sagas} sagas, {fault} {KILL_AFTER_S}s in")

        def crash() -> None:
            if isinstance(broker, MosquittoBroker):
                broker.kill()
                time.sleep(DOWN_S)
                broker.start()
            elif isinstance(broker, NatsCluster):
                broker.kill(0)

        killer = threading.Timer(KILL_AFTER_S, crash)
        killer.start()
        expected: dict[str, str] = {}
        for i, outcome in enumerate(outcomes):
            order_id = f"fault-{i}"
            status, _ = http_json(f"{group['order']}/orders", SAMPLES[outcome].body(order_id=order_id))
            assert status == 202, status
            expected[order_id] = outcome
        killer.join()
        recovered = time.monotonic()
        progress(f"faults ({kind}): waiting for every saga to end")
        done: set[str] = set()
        last_done = recovered
        while len(done) < sagas and time.monotonic() - recovered < DEADLINE_S:
            waiting = [w for w in expected if w not in done]
            for start in range(0, len(waiting), 100):
                query = "&".join(f"id={w}" for w in waiting[start : start + 100])
                _, body = http_json(f"{agg}/workflows?{query}", timeout=30)
                for view in (body or {}).get("views", []):
                    sample = SAMPLES[expected[view["workflow_id"]]]
                    states = {n: p["state"] for n, p in view["parts"].items()}
                    if view["state"] == sample.state and states == sample.parts:
                        done.add(view["workflow_id"])
                        last_done = time.monotonic()
            time.sleep(0.5)
        time.sleep(1.0)  # duplicates from the last redrives land
        after = _counts(group)
        applied = {n: after[n]["applied"] - before[n]["applied"] for n in group}
        needed = {n: sum(SAMPLES[o].applied[n] for o in outcomes) for n in group}
        return {
            "broker": f"NATS JetStream, {len(broker.nodes)} nodes"
            if isinstance(broker, NatsCluster)
            else "Mosquitto",
            "fault": fault,
            "redrive": redrive,
            "sagas": sagas,
            "finished": len(done),
            "seconds_to_finish_after_fault": round(last_done - recovered, 1),
            "stall_after_ms": STALL_AFTER_MS,
            "workflows_redriven": metric_sum(agg, "aggregator_redrives_total", participant="order"),
            "duplicates_dropped": sum(after[n]["duplicates"] - before[n]["duplicates"] for n in group),
            "reconnects": sum(after[n]["connects"] - before[n]["connects"] for n in group),
            "applied": applied,
            "needed": needed,
            "exact": applied == needed,
        }
