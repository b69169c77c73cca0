"""Workflow events (events mode): how long after the participant's event that changes a
workflow's derived state the workflow event reaches a subscriber.

The four participants (processes, SQLite) and ``python -m aggregator serve`` in events mode
share the benchmark's own Mosquitto. Sagas of the four sample outcomes are placed at a steady
rate; one subscriber in this process, on the saga's prefix, records when each participant event
and each workflow event arrives (wall clock, the participants' clocks being this machine's).

For each workflow event, the *last part's event* is the participant event that made the newest
of the parts its view shows (matched by participant, workflow and version): the one that
changed the derived state. Figures:

* **from the part event's arrival**: the workflow event's arrival minus the last part's event's
  arrival at the same subscriber (the aggregator receives it at the same moment): the
  aggregator's own delay, receive to PUBACK'd republication;
* **from the part event's ``time``**: the workflow event's arrival minus the ``time`` the
  participant stamped on its event (its commit): what a consumer sees end to end (target row);
* **reference, same run**: the last part's event's own delivery, its arrival minus its ``time``
  (the participant's outbox relay and the broker).

Beside them: the events expected (each outcome's sequence of derived states), received, missed
and duplicated.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiomqtt

from contract import cancel_and_wait, epoch_s
from order_saga import SAMPLES

from ._cluster import Cluster, http_json
from ._stats import ratio, summary

Progress = Callable[[str], None]

#: The participants' prefix (``cluster.saga`` appends the group's number to the one it is given).
PREFIX = "notify0"
#: The derived states each sample outcome's saga goes through, in order (one workflow event each).
SEQUENCES = {
    "happy": ["IN_PROGRESS", "COMPLETED"],
    "declined": ["IN_PROGRESS", "FAILED"],
    "out-of-stock": ["IN_PROGRESS", "COMPENSATING", "COMPENSATED"],
    "unshippable": ["IN_PROGRESS", "COMPENSATING", "COMPENSATED"],
}
#: The target: p99 of the end-to-end figure, in ms.
TARGET_P99_MS = 50.0
SETTLE_S = 20.0


@dataclass(frozen=True)
class Scale:
    """How long sagas are placed, and how fast."""

    duration_s: float
    rate: float


FULL = Scale(duration_s=40.0, rate=20.0)
QUICK = Scale(duration_s=3.0, rate=10.0)


@dataclass(frozen=True)
class Arrival:
    """One message as the subscriber got it."""

    at: float
    """``time.time()`` when it arrived."""
    topic: str
    event: dict[str, Any]


async def _subscribe(url: str, arrivals: list[Arrival], ready: asyncio.Event) -> None:
    host, _, port = url.removeprefix("mqtt://").partition(":")
    async with aiomqtt.Client(
        host, int(port or 1883), identifier=f"bench-notify-{time.monotonic_ns()}"
    ) as client:
        await client.subscribe(f"{PREFIX}/+/+", qos=1)
        ready.set()
        async for message in client.messages:
            at = time.time()
            topic = message.topic.value
            if "/watermark/" in topic or "/deadletter/" in topic:
                continue
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            arrivals.append(Arrival(at, topic, json.loads(payload)))


async def _load(
    broker: str, order_url: str, scale: Scale, progress: Progress
) -> tuple[list[Arrival], dict[str, str]]:
    """Place sagas at ``scale.rate`` for ``scale.duration_s``; every message the subscriber got, and
    the workflows placed (id → outcome)."""
    arrivals: list[Arrival] = []
    ready = asyncio.Event()
    listener = asyncio.create_task(_subscribe(broker, arrivals, ready))
    placed: dict[str, str] = {}
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        outcomes = list(SEQUENCES)
        count = int(scale.duration_s * scale.rate)
        progress(f"notify: {count} sagas at {scale.rate:g}/s")
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with aiohttp.ClientSession() as http:
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / scale.rate - loop.time()))
                outcome = outcomes[i % len(outcomes)]
                workflow_id = f"wfe-{i}"
                body = SAMPLES[outcome].body(workflow_id)
                async with http.post(f"{order_url}/orders", json=body) as answer:
                    if answer.status == 202:
                        placed[workflow_id] = outcome
            progress("notify: waiting for the last workflow events")
            expected = sum(len(SEQUENCES[o]) for o in placed.values())
            deadline = loop.time() + SETTLE_S
            while loop.time() < deadline:
                got = {a.event["id"] for a in arrivals if a.topic.startswith(f"{PREFIX}/workflow/")}
                if len(got) >= expected:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # late duplicates, if any
    finally:
        await cancel_and_wait(listener)
    return arrivals, placed


def analyse(arrivals: list[Arrival], placed: dict[str, str]) -> dict[str, Any]:
    """The figures of the module docstring from the subscriber's record."""
    parts: dict[tuple[str, str, int], Arrival] = {}
    workflow: list[Arrival] = []
    for arrival in arrivals:
        event = arrival.event
        if arrival.topic.startswith(f"{PREFIX}/workflow/"):
            workflow.append(arrival)
        elif isinstance(event.get("data"), dict) and "version" in event["data"]:
            parts.setdefault((event["source"], event["subject"], event["data"]["version"]), arrival)
    seen: dict[str, Arrival] = {}
    duplicates = 0
    for arrival in workflow:
        if arrival.event["id"] in seen:
            duplicates += 1
        else:
            seen[arrival.event["id"]] = arrival
    from_arrival, from_time, reference, unmatched = [], [], [], 0
    sequences: dict[str, list[str]] = {}
    for arrival in seen.values():
        event = arrival.event
        sequences.setdefault(event["subject"], []).append(event["type"].removeprefix("workflow."))
        causes = [
            parts[key]
            for name, part in event["data"]["parts"].items()
            if part["state"] is not None and (key := (name, event["subject"], part["version"])) in parts
        ]
        if not causes:
            unmatched += 1
            continue
        last = max(causes, key=lambda a: a.at)
        stamped = epoch_s(last.event["time"])
        from_arrival.append((arrival.at - last.at) * 1000)
        if stamped is not None:
            from_time.append((arrival.at - stamped) * 1000)
            reference.append((last.at - stamped) * 1000)
    expected = sum(len(SEQUENCES[o]) for o in placed.values())
    wrong = sorted(wf for wf, o in placed.items() if sequences.get(wf) != SEQUENCES[o])
    return {
        "sagas": len(placed),
        "events_expected": expected,
        "events_received": len(seen),
        "duplicates": duplicates,
        "unmatched": unmatched,
        "workflows_with_another_sequence": len(wrong),
        "examples_of_another_sequence": {wf: sequences.get(wf, []) for wf in wrong[:5]},
        "from_part_event_arrival_ms": summary(from_arrival),
        "from_part_event_time_ms": summary(from_time),
        "part_event_delivery_ms": summary(reference),
    }


def measure(cluster: Cluster, *, scale: Scale, progress: Progress) -> dict[str, Any]:
    """Broker, participants, an events-mode aggregator; the load; the figures."""
    progress("notify: Mosquitto, the four participants and an events-mode aggregator")
    broker = cluster.start_broker()
    group = cluster.saga(prefix=PREFIX.removesuffix("0"))[0]
    agg = cluster.aggregator(group, name="agg-notify", freshness="events", prefix=PREFIX)
    deadline = time.monotonic() + 30
    while not http_json(f"{agg}/readyz")[1].get("event_feed", {}).get("connected"):
        if time.monotonic() > deadline:
            raise TimeoutError("the aggregator's event feed did not come up")
        time.sleep(0.1)
    time.sleep(2.5)  # every participant heard (a watermark a second): new workflows' parts known absent
    arrivals, placed = asyncio.run(_load(broker, group["order"], scale, progress))
    result = analyse(arrivals, placed)
    result.update(rate=scale.rate, duration_s=scale.duration_s)
    return result


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The target row: p99 end to end, beside the part event's own delivery p99 (same run)."""
    value = r["from_part_event_time_ms"]["p99"]
    reference = r["part_event_delivery_ms"]["p99"]
    whole = r["events_received"] == r["events_expected"] and not r["workflows_with_another_sequence"]
    return {
        "workflow_event_after_last_part_event": {
            "figure": "workflow event at a subscriber after the last part's event (events mode), p99 "
            "from the part event's time; reference: that part event's own delivery p99",
            "value": value,
            "reference": reference,
            "unit": "ms",
            "ratio": ratio(value, reference),
            "target": f"p99 ≤ {TARGET_P99_MS:g} ms",
            "met": bool(value <= TARGET_P99_MS and whole),
            "note": f"{r['sagas']} sagas at {r['rate']:g}/s; p50 {r['from_part_event_time_ms']['p50']} ms; "
            f"from the part event's arrival p50 / p99 {r['from_part_event_arrival_ms']['p50']} / "
            f"{r['from_part_event_arrival_ms']['p99']} ms; {r['events_received']} of {r['events_expected']} "
            f"events, {r['duplicates']} duplicates, {r['workflows_with_another_sequence']} workflows with "
            "another sequence",
        }
    }


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """The row, beside its reference."""
    with Cluster() as cluster:
        results = measure(cluster, scale=QUICK if quick else FULL, progress=progress)
    results["targets"] = targets(results)
    return results


#: Progress steps :func:`run` reports.
STEPS = 3
