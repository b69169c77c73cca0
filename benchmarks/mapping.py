"""Mapped participants (DESIGN §5a), and their targets: what reading a participant's own REST
shape through a mapping costs, beside references measured in the same run.

* **CPU per cold view, mapped vs contract**: the aggregator (``python -m aggregator serve``,
  on-demand) reading the trip example's four services through ``trip_booking/trip.toml``, and
  the same definition without its mappings reading four participants that speak §4. Both kinds
  of participants are synthetic in-memory servers (:mod:`benchmarks.refservers` ``synthetic``)
  with the same fixed delay, so the aggregator's own work is what differs. Closed loop, 16
  clients over 400 distinct ids, alternating rounds; the serving process' user + system CPU
  over the window, per view.
* **Cold-read throughput at 16 clients**: the mapped aggregator (batch mapping for trips, flights and
  payments, as trip.toml has it) against the naive ``asyncio.gather`` of the four services' own
  single-id GETs (``naive-mapped``), same synthetic services, same run.
* **Events mode with mapped events**: the four real trip services (processes, SQLite) on a
  Mosquitto of the benchmark's own, the aggregator in events mode with trip.toml; trips booked at
  a steady rate over the four outcomes, views read at about 10 per write: the share of reads
  served without a participant call (no part of the view ``live``), cross-checked with the
  aggregator's ``aggregator_participant_calls_total``.

Open-loop latency of the three cold paths at a fixed rate is reported beside them (no target).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from order_saga.broker import free_port

from ._cluster import Cluster, drive, http_json, metric_sum
from ._stats import ratio, summary
from .latency import VIEW, _alternate, _closed, _medians, _open, _target
from .refservers import TRIP_PATHS

Progress = Callable[[str], None]

#: Every synthetic participant's fixed delay (no jitter), mapped and contract alike.
DELAY_MS = 2.0
#: Open-loop reads take these ids at random (cold: no freshness mode here keeps parts).
OPEN_IDS = [f"trip-open-{i}" for i in range(2000)]
#: The trip service's request bodies of each outcome (trip_booking.demo's), and how many writes
#: (state changes, over the four services) each makes.
OUTCOMES: dict[str, dict[str, Any]] = {
    "ok": {"travellers": 2, "nights": 3, "amount": 420.5},
    "no-flight": {"travellers": 10, "nights": 3, "amount": 900},
    "no-room": {"travellers": 2, "nights": 15, "amount": 900},
    "declined": {"travellers": 2, "nights": 3, "amount": 6000},
}
EXPECTED_WRITES = {"ok": 5, "no-flight": 3, "no-room": 5, "declined": 7}
#: Reads per expected write in the events run.
READS_PER_WRITE = 10
#: How long the services and the aggregator may take to subscribe, and the trips to settle.
READY_S = 30.0
SETTLE_S = 20.0


@dataclass(frozen=True)
class Scale:
    """How long each part runs."""

    rounds: int
    closed_s: float
    open_s: float
    open_rate: float
    events_s: float
    trip_rate: float


FULL = Scale(rounds=3, closed_s=5.0, open_s=8.0, open_rate=100.0, events_s=30.0, trip_rate=4.0)
QUICK = Scale(rounds=2, closed_s=1.0, open_s=0.6, open_rate=60.0, events_s=3.0, trip_rate=4.0)


def trip_toml() -> str:
    """The trip example's definition, as shipped."""
    return (resources.files("trip_booking") / "trip.toml").read_text()


_MAPPING_TABLE = re.compile(r"^\[participants\.[a-z][a-z0-9_-]*\.(status|batch|events)(\.[a-z]+)?\]")


def contract_definition(text: str) -> str:
    """``text`` (trip.toml) without its mapping tables: the same participants, states, rules and
    settings, each participant read through §4's status API."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skipping = bool(_MAPPING_TABLE.match(line))
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def cold(cluster: Cluster, *, scale: Scale, progress: Progress) -> dict[str, Any]:
    """Mapped aggregator, contract aggregator and the naive mapped gather over synthetic services."""
    progress("mapping: synthetic services and aggregators")
    mapped_urls = {name: cluster.synthetic(name, latency_ms=DELAY_MS) for name in TRIP_PATHS}
    contract_urls = {
        name: cluster.synthetic("contract", name=name, latency_ms=DELAY_MS) for name in TRIP_PATHS
    }
    config = cluster.dir / "trip.toml"
    config.write_text(trip_toml())
    contract_config = cluster.dir / "trip-contract.toml"
    contract_config.write_text(contract_definition(trip_toml()))
    mapped = cluster.aggregator_config(config, mapped_urls, name="agg-mapped", freshness="on-demand")
    contract = cluster.aggregator_config(
        contract_config, contract_urls, name="agg-contract", freshness="on-demand"
    )
    naive = cluster.reference("naive-mapped", participants=[f"{n}={u}" for n, u in mapped_urls.items()])
    # Each answers a whole, booked view (not an error view that would be cheaper to build).
    for url in (mapped, contract):
        status, view = http_json(f"{url}/workflows/trip-check")
        assert status == 200, (url, status)
        assert view["state"] == "BOOKED", (url, view)
        assert view["complete"], (url, view)
        assert all(p.get("error") is None for p in view["parts"].values()), view
    status, body = http_json(f"{naive}/workflows/trip-check")
    assert status == 200, (naive, status)
    assert all(body["parts"].values()), body

    def cpu(url: str, participants: dict[str, str]) -> dict[str, list[int]]:
        return {
            "cpu_ms_per_view": [cluster.pid(url)],
            "participants_cpu_ms_per_view": [cluster.pid(u) for u in participants.values()],
        }

    progress("mapping: cold reads, 16 and 1 clients over 400 distinct ids")

    def closed(url: str, participants: dict[str, str], concurrency: int) -> Callable[[], dict[str, float]]:
        return functools.partial(
            _closed,
            url + VIEW,
            concurrency=concurrency,
            duration=scale.closed_s,
            cpu=cpu(url, participants),
            upstream=list(participants.values()),
        )

    c16 = _alternate(
        {
            "mapped": closed(mapped, mapped_urls, 16),
            "contract": closed(contract, contract_urls, 16),
            "naive_mapped": closed(naive, mapped_urls, 16),
        },
        scale.rounds,
    )

    # One client: no two reads share a call, so each view costs four calls on both sides and the
    # CPU per view differs by the reading of the answers alone (mapped vs §4), not by batching.
    c1 = _alternate(
        {"mapped": closed(mapped, mapped_urls, 1), "contract": closed(contract, contract_urls, 1)},
        scale.rounds,
    )

    progress("mapping: cold views, open loop")
    samples = {
        label: _open(f"{url}{VIEW}", rate=scale.open_rate, duration=scale.open_s, ids=OPEN_IDS)
        for label, url in (("mapped", mapped), ("contract", contract), ("naive_mapped", naive))
    }
    stats = {label: summary(values) for label, values in samples.items()}
    return {
        "delay_ms": DELAY_MS,
        "ids": 400,
        "rounds": scale.rounds,
        "duration_s": scale.closed_s,
        "c16": {"median": _medians(c16), "per_round": c16},
        "c1": {"median": _medians(c1), "per_round": c1},
        "open": {
            "rate": scale.open_rate,
            "duration_s": scale.open_s,
            "stats": stats,
            "ratios": {
                "p50_mapped_vs_contract": ratio(stats["mapped"]["p50"], stats["contract"]["p50"]),
                "p99_mapped_vs_contract": ratio(stats["mapped"]["p99"], stats["contract"]["p99"]),
                "p50_mapped_vs_naive": ratio(stats["mapped"]["p50"], stats["naive_mapped"]["p50"]),
            },
        },
    }


def _wait(check: Callable[[], bool], what: str, timeout: float = READY_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(what)


def _subscribed(url: str) -> bool:
    return bool(http_json(url + "/healthz")[1]["subscribed"])


def trip_services(cluster: Cluster) -> dict[str, str]:
    """The four trip services (``python -m trip_booking serve``), subscribed to the cluster's broker."""
    assert cluster.broker is not None
    urls = {}
    for name in TRIP_PATHS:
        port = free_port()
        args = ["-m", "trip_booking", "serve", name, "--port", str(port), "--broker", str(cluster.broker.url)]
        args += ["--db", str(cluster.dir / f"trip-{name}.sqlite3"), "--log-level", "WARNING"]
        urls[name] = cluster.process(args, name=f"trip-{name}", port=port, ready="/healthz")
    for name, url in urls.items():
        _wait(functools.partial(_subscribed, url), f"{name} did not subscribe")
    return urls


def writes(urls: dict[str, str], trips: list[str]) -> int:
    """State changes the services made for ``trips``, from their records: the trip's and the
    room's versions, one payment each, a seat held or refused (and released: one more)."""
    total = 0
    for wf in trips:
        _, trip = http_json(f"{urls['trips']}/api/trips/{wf}")
        total += trip["trip"]["rev"] if trip else 0
        status, room = http_json(f"{urls['hotel']}/hotel/reservations/{wf}")
        total += room["data"]["attributes"]["version"] if status == 200 else 0
    for start in range(0, len(trips), 100):
        chunk = ",".join(trips[start : start + 100])
        _, flights = http_json(f"{urls['flights']}/flights/bookings?trip={chunk}")
        total += sum(1 + (b["state"] == "released") for b in flights["bookings"])
        _, payments = http_json(f"{urls['payments']}/v2/payments?order_id={chunk}")
        total += sum(p["revision"] for p in payments["items"])
    return total


def events(cluster: Cluster, *, scale: Scale, progress: Progress) -> dict[str, Any]:
    """Events mode over the real trip services: reads served without a participant call."""
    progress("mapping: trip services, Mosquitto and an events-mode aggregator")
    cluster.start_broker()
    urls = trip_services(cluster)
    config = cluster.dir / "trip-events.toml"
    config.write_text(trip_toml())
    agg = cluster.aggregator_config(config, urls, name="agg-trip-events", freshness="events")
    _wait(lambda: bool(http_json(agg + "/readyz")[1]["event_feed"]["connected"]), "the event feed is not up")

    progress("mapping: events mode, trips booked and read")
    writes_per_s = scale.trip_rate * sum(EXPECTED_WRITES.values()) / len(EXPECTED_WRITES)
    calls = "aggregator_participant_calls_total"
    calls_before = metric_sum(agg, calls)
    result = drive(
        {
            "mode": "trips",
            "url": agg,
            "trips_url": urls["trips"],
            "outcomes": OUTCOMES,
            "trip_rate": scale.trip_rate,
            "read_rate": READS_PER_WRITE * writes_per_s,
            "duration": scale.events_s,
        }
    )
    participant_calls = metric_sum(agg, calls) - calls_before
    booked: dict[str, str] = result["booked"]
    expected = sum(EXPECTED_WRITES[o] for o in booked.values())
    trips = list(booked)
    made = 0
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:  # the last trips' sagas finish after the load
        made = writes(urls, trips)
        if made >= expected:
            break
        time.sleep(0.2)
    reads = result["reads"]
    ok = [r for r in reads if r["status"] == 200]
    live = [r for r in ok if "live" in r["sources"]]
    served = len(ok) - len(live)
    _, final = http_json(f"{agg}/workflows/{trips[-1]}") if trips else (0, None)
    return {
        "trip_rate": scale.trip_rate,
        "read_rate": READS_PER_WRITE * writes_per_s,
        "duration_s": scale.events_s,
        "trips": len(trips),
        "failed_writes": result["failed_writes"],
        "writes": made,
        "writes_expected": expected,
        "reads": len(reads),
        "reads_200": len(ok),
        "reads_per_write": round(len(reads) / max(1, made), 2),
        "reads_with_a_live_part": len(live),
        "served_without_participant_call": served,
        "share_without_participant_call": round(served / len(reads), 4) if reads else 0.0,
        "participant_calls": participant_calls,
        "participant_calls_per_read": round(participant_calls / max(1, len(reads)), 4),
        "statuses": {
            str(s): sum(r["status"] == s for r in reads) for s in sorted({r["status"] for r in reads})
        },
        "last_trip_state": final["state"] if final else None,
    }


def targets(c: dict[str, Any], e: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The three mapping rows, each a ratio to its same-run reference."""
    med = c["c16"]["median"]
    mapped, contract, naive = med["mapped"], med["contract"], med["naive_mapped"]
    one = c["c1"]["median"]
    delay = f"synthetic services at {c['delay_ms']:g} ms"
    return {
        "mapped_cpu_per_cold_view": _target(
            f"mapped participants: aggregator CPU per cold view (16 clients, 400 distinct ids, {delay}), "
            "trip.toml's mappings vs the same definition on four §4 participants",
            mapped["cpu_ms_per_view"], contract["cpu_ms_per_view"], "CPU ms/view", at_least=False, bound=1.2,
            note=f"participant calls {mapped['upstream_calls_per_view']} / {contract['upstream_calls_per_view']} "
            "per view (trip.toml batches trips, flights and payments; the hotel has no batch endpoint; §4 participants all batch); throughput "
            f"{mapped['rps']} / {contract['rps']} req/s; machine busy {mapped['machine_busy']:.0%} / "
            f"{contract['machine_busy']:.0%}; at 1 client (four calls a view on both sides) "
            f"{one['mapped']['cpu_ms_per_view']} / {one['contract']['cpu_ms_per_view']} CPU ms/view, ratio "
            f"{ratio(one['mapped']['cpu_ms_per_view'], one['contract']['cpu_ms_per_view'])}",
        ),
        "mapped_cold_throughput_c16": _target(
            f"mapped participants: cold-read throughput, 16 clients, 400 distinct ids ({delay}), "
            "vs the naive gather of the services' own single-id GETs",
            mapped["rps"], naive["rps"], "req/s", at_least=True, bound=2.0,
            note=f"participant calls {mapped['upstream_calls_per_view']} / {naive['upstream_calls_per_view']} "
            f"per view; serving process CPU {mapped['cpu_ms_per_view']} / {naive['cpu_ms_per_view']} ms per view; "
            f"participants' CPU {mapped['participants_cpu_ms_per_view']} / "
            f"{naive['participants_cpu_ms_per_view']} ms per view; p50 {mapped['p50']} / {naive['p50']} ms; "
            f"machine busy {mapped['machine_busy']:.0%} / {naive['machine_busy']:.0%}; naive gather on "
            "asyncio's default loop",
        ),
        "mapped_events_served_without_call": _target(
            "mapped events (events mode, the four trip services on Mosquitto): share of reads served "
            f"without a participant call, {e['reads_per_write']} reads per write",
            round(100 * e["share_without_participant_call"], 2), 100.0, "%", at_least=True, bound=0.98,
            note=f"{e['served_without_participant_call']} of {e['reads']} reads; {e['writes']} writes "
            f"({e['writes_expected']} expected) over {e['trips']} trips; {e['participant_calls']:.0f} "
            f"participant calls (aggregator_participant_calls_total); {e['reads_with_a_live_part']} reads "
            "with a live part",
        ),
    }  # fmt: skip


def run(*, quick: bool, progress: Progress) -> dict[str, Any]:
    """The three rows, each beside its reference."""
    scale = QUICK if quick else FULL
    with Cluster() as cluster:
        results: dict[str, Any] = {"cold": cold(cluster, scale=scale, progress=progress)}
    with Cluster() as cluster:
        results["events"] = events(cluster, scale=scale, progress=progress)
    results["targets"] = targets(results["cold"], results["events"])
    return results


#: Progress steps :func:`run` reports.
STEPS = 5
