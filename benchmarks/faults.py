"""Fault run: Mosquitto SIGKILLed while sagas run, restarted; the aggregator redrives by itself.

Real processes: the broker, the four participants, ``python -m aggregator serve --redrive
auto``. Orders are placed through the order service; 0.4 s in, the broker is SIGKILLed (it
loses what it had acknowledged but not yet saved) and restarted 0.5 s later. Reported: sagas
that reached their expected end state, how long after the restart the last one did, redrives
sent, duplicates the participants' inboxes dropped, and whether every participant applied
exactly the events the sagas need (nothing lost, nothing applied twice).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from participants import SAMPLES

from ._cluster import Cluster, http_json, metric_sum

Progress = Callable[[str], None]

STALL_AFTER_MS = 2000
KILL_AFTER_S = 0.4
DOWN_S = 0.5
DEADLINE_S = 180.0


def _counts(urls: dict[str, str]) -> dict[str, dict[str, int]]:
    return {name: http_json(f"{url}/healthz")[1]["counts"] for name, url in urls.items()}


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """One broker crash during ``600`` sagas (120 in a quick run)."""
    sagas = 120 if quick else 600
    outcomes = list(itertools.islice(itertools.cycle(SAMPLES), sagas))
    with Cluster() as cluster:
        cluster.start_broker()
        assert cluster.broker is not None
        broker = cluster.broker
        (group,) = cluster.saga(prefix="f-")
        agg = cluster.aggregator(group, name="agg-faults", stall_after_ms=STALL_AFTER_MS, redrive="auto")
        before = _counts(group)
        progress(f"faults: {sagas} sagas, broker SIGKILLed {KILL_AFTER_S}s in")

        def crash() -> None:
            broker.kill()
            time.sleep(DOWN_S)
            broker.start()

        killer = threading.Timer(KILL_AFTER_S, crash)
        killer.start()
        expected: dict[str, str] = {}
        for i, outcome in enumerate(outcomes):
            order_id = f"fault-{i}"
            status, _ = http_json(f"{group['order']}/orders", SAMPLES[outcome].body(order_id=order_id))
            assert status == 202, status
            expected[order_id] = outcome
        killer.join()
        restarted = time.monotonic()
        progress("faults: waiting for every saga to end")
        done: set[str] = set()
        last_done = restarted
        while len(done) < sagas and time.monotonic() - restarted < DEADLINE_S:
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
            "sagas": sagas,
            "finished": len(done),
            "seconds_to_finish_after_restart": round(last_done - restarted, 1),
            "stall_after_ms": STALL_AFTER_MS,
            "workflows_redriven": metric_sum(agg, "aggregator_redrives_total", participant="order"),
            "duplicates_dropped": sum(after[n]["duplicates"] - before[n]["duplicates"] for n in group),
            "applied": applied,
            "needed": needed,
            "exact": applied == needed,
        }
