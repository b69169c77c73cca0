"""The same saga under every coordination strategy, measured side by side (docs/design.md, "Benchmarks").

Strategies: stateless choreography read through the aggregator (``on-demand``, ``ttl``,
``events``), the front controller (the order service keeps the whole workflow) and
orchestration (the orchestrator owns it). Each runs in a cluster of its own: the broker, the
four participants (and the orchestrator), real processes on loopback. One workload for all:

1. **Reads while sagas run**, at 1, 10 and 100 reads per write (writes at a steady Poisson
   rate, reads of the most recent workflows): read latency, reads served, network calls to the
   participants per read, staleness against the participants' own history (age, fresh share,
   calibration; :mod:`benchmarks.staleness`), saga completion time (POST to the last commit of
   the saga, from the participants' histories) and messages on the broker per saga.
2. **Saga throughput**: orders posted faster than they can finish; sagas/s from the first POST
   to the last commit.
3. **A participant down**: the payment service SIGKILLed, then reads of finished workflows:
   the share answered 200, and the share that was complete; then it is restarted.
4. **The coordinator down**: sagas posted, then the coordinator SIGKILLed (the aggregator, the
   front controller, the orchestrator) for :data:`DOWN_S`: the share of the remaining saga
   steps the participants committed while it was down, how long after its restart the last
   saga finished, and the share of new orders refused meanwhile.
5. **What a change costs**: services to redeploy to add a step, counted from the code.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from order_saga import SPECS
from order_saga.coordination import FLOW, SAGA_EVENTS

from ._cluster import Cluster, drive, http_json, status_requests
from ._stats import percentile
from .staleness import analyse, truth

Progress = Callable[[str], None]

#: name → how the strategy runs: reads through the aggregator (with these settings), or a coordinator.
STRATEGIES: dict[str, dict[str, Any]] = {
    "choreography, on-demand": {"coordinator": "aggregator", "freshness": "on-demand"},
    "choreography, ttl 100 ms": {
        "coordinator": "aggregator",
        "freshness": "ttl",
        "ttl_ms": 100,
        "stale_while_revalidate_ms": 0,
    },
    "choreography, events": {"coordinator": "aggregator", "freshness": "events"},
    "front controller": {"coordinator": "front-controller"},
    "orchestration": {"coordinator": "orchestrator"},
}
RATIOS = (1, 10, 100)
WRITE_RATE = 4.0
DOWN_S = 3.0
#: The same in a ``--quick`` run.
DOWN_QUICK_S = 1.5
#: The step a change adds: a fraud check between the payment's authorisation and the stock reservation.
NEW_STEP_AFTER = "payment.authorized"


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """Every strategy under the one workload; figures per strategy."""
    # Quick: 2 s per phase still gives every ratio reads (at 1:1, 4 reads/s) and writes to check.
    duration = 2.0 if quick else 15.0
    out: dict[str, Any] = {
        "write_rate": WRITE_RATE,
        "ratios": list(RATIOS),
        "phase_s": duration,
        "strategies": {},
    }
    for name, how in STRATEGIES.items():
        out["strategies"][name] = _one(name, dict(how), duration=duration, quick=quick, progress=progress)
    out["redeploys"] = redeploys()
    return out


def redeploys() -> dict[str, dict[str, Any]]:
    """Services to redeploy to add a step after :data:`NEW_STEP_AFTER`, counted from the code.

    Under choreography the new service and every participant that consumes that event (it must
    consume the new step's event instead); the aggregator only reloads its definition. The
    front controller consumes every saga event by name (:data:`SAGA_EVENTS`): it is redeployed
    too. Under orchestration the new service and the orchestrator, whose flow table (:data:`FLOW`)
    holds every step; the participants do not change.
    """
    consumers = sorted(n for n, spec in SPECS.items() if NEW_STEP_AFTER in spec.handlers)
    front = sorted({*consumers, "order"}) if NEW_STEP_AFTER in SAGA_EVENTS else consumers
    commanding = [e for e, steps in FLOW.items() if e == NEW_STEP_AFTER and steps]
    return {
        "choreography": {
            "count": 1 + len(consumers),
            "services": ["new step", *consumers],
            "config": "definition",
        },
        "front controller": {"count": 1 + len(front), "services": ["new step", *front], "config": "-"},
        "orchestration": {
            "count": 1 + (1 if commanding else 0),
            "services": ["new step", "orchestrator"] if commanding else ["new step"],
            "config": "-",
        },
    }


def _published(urls: list[str]) -> int:
    """Events and commands the services have published (outbox rows; watermarks not counted)."""
    return sum(http_json(f"{u}/healthz")[1]["counts"]["published"] for u in urls)


def _epochs(group: dict[str, str], ids: list[str]) -> dict[str, float]:
    """Each workflow's last commit (wall time) over every participant's history."""
    last: dict[str, float] = {}
    for (_, wf), writes in truth(group, ids).items():
        last[wf] = max([last.get(wf, 0.0), *(at for _, at in writes)])
    return last


def _wait_finished(group: dict[str, str], ids: list[str], timeout: float) -> tuple[dict[str, float], int]:
    """Wait until every workflow's order part is final (CONFIRMED or CANCELLED), then 0.3 s more
    (compensations after the order's cancellation land too); each one's last commit time, and
    how many finished within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        final = set()
        for start in range(0, len(ids), 100):
            query = "&".join(f"workflow_id={w}" for w in ids[start : start + 100])
            _, body = http_json(f"{group['order']}/status?{query}")
            final |= {s["workflow_id"] for s in body["statuses"] if s["state"] in ("CONFIRMED", "CANCELLED")}
        if len(final) == len(ids) or time.monotonic() > deadline:
            time.sleep(0.3)
            return _epochs(group, ids), len(final)
        time.sleep(0.1)


def _one(
    name: str, how: dict[str, Any], *, duration: float, quick: bool, progress: Progress
) -> dict[str, Any]:
    coordinator = how.pop("coordinator")
    figures: dict[str, Any] = {"coordinator": coordinator}
    with Cluster() as cluster:
        cluster.start_broker()
        prefix = "c-"
        flags: dict[str, list[str]] = {}
        if coordinator == "orchestrator":
            flags = {"*": ["--coordination", "orchestrated"]}
        elif coordinator == "front-controller":
            flags = {"order": ["--front-controller"]}
        (group,) = cluster.saga(prefix=prefix, flags=flags)
        topic_prefix = f"{prefix}0"
        if coordinator == "aggregator":
            read_url = cluster.aggregator(group, name=f"agg-{how['freshness']}", prefix=topic_prefix, **how)
            write_url, stopped = group["order"], read_url
        elif coordinator == "front-controller":
            read_url = write_url = stopped = group["order"]
        else:
            read_url = write_url = stopped = cluster.orchestrator(prefix=topic_prefix)
        services = [*group.values(), *([read_url] if coordinator == "orchestrator" else [])]

        # 1. Reads while sagas run, at each read:write ratio.
        written: list[str] = []
        posted: dict[str, float] = {}
        reads_by_ratio: dict[int, list[dict[str, Any]]] = {}
        calls: dict[int, int] = {}
        published_before = _published(services)
        for ratio in RATIOS:
            progress(f"compare: {name}, {ratio}:1")
            before = sum(status_requests(list(group.values())).values())
            result = drive(
                {
                    "mode": "mix",
                    "url": read_url,
                    "order_url": write_url,
                    "write_rate": WRITE_RATE,
                    "read_rate": WRITE_RATE * ratio,
                    "duration": duration,
                    "seed": ratio,
                }
            )
            calls[ratio] = sum(status_requests(list(group.values())).values()) - before
            reads_by_ratio[ratio] = result["reads"]
            written += result["written"]
            posted |= result["posted"]
        finished, figures["sagas_finished"] = _wait_finished(group, written, timeout=60)
        published = _published(services) - published_before
        writes = truth(group, written)
        figures["reads"] = {}
        for ratio, reads in reads_by_ratio.items():
            stats = analyse(reads, writes)
            ok = [r for r in reads if r["status"] == 200]
            latencies = [r["latency_ms"] for r in ok]
            stats["offered"] = len(reads)
            stats["answered_200"] = round(len(ok) / max(1, len(reads)), 4)
            stats["reads_per_s"] = round(len(ok) / duration, 1)
            stats["calls_per_read"] = round(calls[ratio] / max(1, len(ok)), 3)
            stats["samples"] = latencies
            figures["reads"][str(ratio)] = stats
        completion = [(finished[wf] - posted[wf]) * 1000 for wf in written if wf in finished]
        figures["completion_ms"] = {
            "p50": round(percentile(completion, 50), 1),
            "p99": round(percentile(completion, 99), 1),
            "samples": completion,
        }
        figures["sagas"] = len(written)
        figures["messages_per_saga"] = round(published / max(1, len(written)), 2)

        # 2. Saga throughput: more orders than the saga can carry, as fast as they come.
        progress(f"compare: {name}, saga throughput")
        burst = drive(
            {
                "mode": "mix",
                "url": read_url,
                "order_url": write_url,
                "write_rate": 1000.0,  # well past what the saga carries: the rate measured is the saga's
                "read_rate": 1e-6,
                "duration": 0.5 if quick else 2.0,
                "seed": 7,
            }
        )
        ids = burst["written"]
        ends, figures["throughput_sagas_finished"] = _wait_finished(group, ids, timeout=120)
        span = max(ends.values(), default=0.0) - min(burst["posted"].values(), default=0.0)
        figures["sagas_per_s"] = round(len(ids) / span, 1) if span > 0 else None
        figures["throughput_sagas"] = len(ids)

        # 3. A participant down: reads of finished workflows; then it is back.
        progress(f"compare: {name}, payment down")
        cluster.kill(group["payment"])
        answered = complete = 0
        sample = random.Random(3).sample(written, min(len(written), 40))
        for wf in sample:
            try:
                status, body = http_json(f"{read_url}/workflows/{wf}", timeout=5)
            except OSError:
                status, body = 599, None
            answered += status == 200
            complete += status == 200 and bool(body and body.get("complete"))
        figures["participant_down"] = {
            "reads": len(sample),
            "answered_200": round(answered / max(1, len(sample)), 3),
            "complete": round(complete / max(1, len(sample)), 3),
        }
        cluster.restart(group["payment"])
        # 4. The coordinator down while sagas are in flight.
        progress(f"compare: {name}, coordinator down")
        figures["coordinator_down"] = _coordinator_down(
            cluster, group, read_url, write_url, stopped, down_s=DOWN_QUICK_S if quick else DOWN_S
        )

    return figures


def _coordinator_down(
    cluster: Cluster, group: dict[str, str], read_url: str, write_url: str, stopped: str, *, down_s: float
) -> dict[str, Any]:
    """Orders posted at 200/s for 1.2 s; 0.4 s in, the coordinator is SIGKILLed (sagas in flight),
    and restarted ``down_s`` (:data:`DOWN_S`) later.

    Reported: the share of the accepted sagas' steps after the kill that the participants
    committed while it was down, how long after its restart the last saga finished, and the
    share of orders refused while it was down (the orchestrator and the front controller take
    the orders; under choreography the order service does, and the aggregator only reads).
    """
    result = drive(
        {"mode": "mix", "url": read_url, "order_url": write_url, "read_rate": 1e-6, "write_rate": 200.0,
         "duration": 1.2, "seed": 11, "kill_pid": cluster.pid(stopped), "kill_after": 0.4}
    )  # fmt: skip
    killed = result["killed_at"]
    time.sleep(max(0.0, killed + down_s - time.time()))
    restarted = time.time()
    cluster.restart(stopped)
    ids = result["written"]
    _, finished = _wait_finished(group, ids, timeout=120)
    steps = [at for writes in truth(group, ids).values() for _, at in writes if at >= killed]
    during = sum(at < restarted for at in steps)
    last = max(steps, default=restarted)
    accepted = sum(at >= killed for at in result["posted"].values())
    refused = sum(at >= killed for at in result["refused_at"])
    return {
        "sagas": len(ids),
        "sagas_finished": finished,
        "steps_after_kill": len(steps),
        "progress_while_down": round(during / len(steps), 3) if steps else None,
        "finished_after_restart_s": round(max(0.0, last - restarted), 2),
        "orders_refused_while_down": round(refused / max(1, refused + accepted), 3),
    }
