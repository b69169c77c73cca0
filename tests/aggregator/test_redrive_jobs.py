"""Redrive jobs on real participants and a real broker: selection, dry run, cutoff, rate, cancel, bounds.

Stalled workflows are made for real as in ``test_stalled``: the order service alone takes orders,
so ``order.created`` reaches nobody; the other participants start later with new sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import _jobs
from order_saga import SPECS
from order_saga.broker import MosquittoBroker
from participants import ParticipantService

from ..support import cli, config, counts, order_body, serve_aggregator, until
from ..support import some_participants as participants

STALL_MS = 400
DEAD = {n: "http://127.0.0.1:9" for n in ("payment", "inventory", "shipping")}


@contextlib.asynccontextmanager
async def order_alone(broker: MosquittoBroker, prefix: str, tmp: Path, **faults: float) -> AsyncIterator[str]:
    """The order service alone (its events reach nobody), with ``faults`` on its status endpoints."""
    cfg = config(broker.url, prefix, tmp / "order.sqlite3", **faults)
    async with ParticipantService(SPECS["order"], config=cfg) as service:
        await service.wait_ready()
        yield service.url


async def place(http: aiohttp.ClientSession, order_url: str, ids: list[str]) -> None:
    for workflow_id in ids:
        async with http.post(f"{order_url}/orders", json=order_body("happy", workflow_id)) as r:
            assert r.status == 202


async def start(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with http.post(f"{url}/redrives", json=body) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["id"])


async def job(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/redrives/{job_id}") as r:
        assert r.status == 200
        found: dict[str, Any] = await r.json()
        return found


async def finished(http: aiohttp.ClientSession, url: str, job_id: str, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (found := await job(http, url, job_id))["state"] == "running":
            await asyncio.sleep(0.02)
    return found


@pytest.mark.slow
async def test_a_job_redrives_stalled_workflows_to_completion_and_a_dry_run_republishes_nothing(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Three orders stall; with every participant up, a dry run lists them (no participant is asked to
    republish), then a job redrives them and each saga completes; every result is ``republished``."""
    ids = [f"rj-{i}" for i in range(3)]
    async with (
        participants(session_broker, prefix, tmp_path, ["order"]) as first,
        aiohttp.ClientSession() as http,
    ):
        await place(http, first["order"], ids)
    await asyncio.sleep(STALL_MS / 1000 + 0.1)
    async with (
        participants(session_broker, prefix, tmp_path, list(SPECS)) as urls,
        serve_aggregator(urls, stall_after_ms=STALL_MS) as served,
        aiohttp.ClientSession() as http,
    ):
        dry = await finished(
            http, served.url, await start(http, served.url, {"filter": {"stalled": True}, "dry_run": True})
        )
        asked = {n: (await counts(http, u))["republish_requests"] for n, u in urls.items()}
        real = await finished(
            http, served.url, await start(http, served.url, {"filter": {"stalled": True}, "rate_per_s": 50})
        )

        async def completed() -> bool:
            views, _ = await served.agg.views(ids)
            return [v.state for v in views] == ["COMPLETED"] * 3

        await until(completed, timeout=10)
        asked_after = {n: (await counts(http, u))["republish_requests"] for n, u in urls.items()}
    assert (dry["state"], dry["selected"], dry["done"]) == ("done", 3, 3)
    assert sorted((r["workflow_id"], r["result"]) for r in dry["results"]) == [(w, "selected") for w in ids]
    assert asked == dict.fromkeys(SPECS, 0)
    assert (real["state"], real["selected"], real["done"], real["failed"]) == ("done", 3, 3, 0)
    assert sorted((r["workflow_id"], r["result"]) for r in real["results"]) == [
        (w, "republished") for w in ids
    ]
    assert all("order 1" in r["detail"] for r in real["results"])
    assert asked_after == dict.fromkeys(SPECS, 3)


@pytest.mark.slow
async def test_cutoff_rate_cancel_failures_and_bounds(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the order service alone (its status endpoints 300 ms slow):

    * cutoff: an order placed while the job's first listing is under way is not taken;
    * rate: 10 workflows at 20/s take at least 0.45 s, and the order service sees 10 requests;
    * the others cannot be reached: each result is ``failed`` naming them;
    * cancel: a job at 2/s cancelled after 0.7 s stops (no more republish requests), results kept;
    * bounds: past the running limit a 429; past the kept limit the oldest finished job is dropped.
    """
    old = [f"rc-{i}" for i in range(10)]
    async with (
        order_alone(session_broker, prefix, tmp_path, latency_ms=300) as order,
        serve_aggregator({"order": order, **DEAD}, stall_after_ms=STALL_MS, deadline_ms=3000) as served,
        aiohttp.ClientSession() as http,
    ):
        await place(http, order, old)
        await asyncio.sleep(0.05)
        url = served.url
        cut = await start(http, url, {"filter": {"state": "IN_PROGRESS"}, "dry_run": True})
        await place(http, order, ["rc-late"])  # while the job's listing waits out the 300 ms
        cut_job = await finished(http, url, cut)

        began = time.monotonic()
        paced = await finished(http, url, await start(http, url, {"ids": old, "rate_per_s": 20}))
        took = time.monotonic() - began
        asked = (await counts(http, order))["republish_requests"]

        slow = await start(http, url, {"ids": old, "rate_per_s": 2})
        monkeypatch.setattr(_jobs, "MAX_RUNNING", 1)
        async with http.post(f"{url}/redrives", json={"ids": old, "dry_run": True}) as r:
            too_many = (r.status, r.headers.get("Retry-After"))
        await asyncio.sleep(0.7)
        async with http.delete(f"{url}/redrives/{slow}") as r:
            cancel_status = r.status
            cancelled = await r.json()
        asked_cancelled = (await counts(http, order))["republish_requests"]
        await asyncio.sleep(1.0)
        asked_later = (await counts(http, order))["republish_requests"]
        kept_cancelled = await job(http, url, slow)

        monkeypatch.setattr(_jobs, "MAX_JOBS", 3)
        newer = []
        for _ in range(3):  # one at a time: one may run
            newer.append(await start(http, url, {"ids": old[:1], "dry_run": True}))
            await finished(http, url, newer[-1])
        async with http.get(f"{url}/redrives") as r:
            listed = [j["id"] for j in (await r.json())["jobs"]]
    assert [r["workflow_id"] for r in cut_job["results"]] == old
    assert cut_job["selected"] == 10
    assert paced["done"] == paced["failed"] == 10 and took >= 0.45, (paced, took)
    assert all(r["result"] == "failed" and "payment" in r["detail"] for r in paced["results"])
    assert asked == 10
    assert too_many == (429, "1")
    assert (cancel_status, cancelled["state"]) == (202, "cancelled")
    assert 1 <= cancelled["done"] <= 3 and kept_cancelled["done"] == cancelled["done"]
    assert asked_cancelled - 10 <= 3 and asked_later == asked_cancelled
    assert listed == newer[::-1]


@pytest.mark.slow
async def test_the_cli_redrives_stalled_workflows_and_says_how_it_went(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """``python -m aggregator redrive --stalled``: a dry run exits 0 listing what it would redrive;
    a real run whose redrives fail (the other participants are down) exits 1 saying so; a bad
    rate is a usage error (2); an aggregator that is not there is 2 too."""
    async with (
        order_alone(session_broker, prefix, tmp_path) as order,
        serve_aggregator({"order": order, **DEAD}, stall_after_ms=STALL_MS) as served,
        aiohttp.ClientSession() as http,
    ):
        await place(http, order, ["cli-1", "cli-2"])
        await asyncio.sleep(STALL_MS / 1000 + 0.2)
        dry = await cli("redrive", "--stalled", "--dry-run", "--url", served.url)
        real = await cli("redrive", "--stalled", "--rate", "50", "--url", served.url)
        bad = await cli("redrive", "--stalled", "--rate", "-1", "--url", served.url)
    gone = await cli("redrive", "--stalled", "--url", "http://127.0.0.1:9")
    assert dry[0] == 0, dry[1]
    assert "2 selected" in dry[1] and "cli-1" in dry[1]
    assert real[0] == 1, real[1]
    assert "2 failed" in real[1] and "payment" in real[1]
    assert bad[0] == 2, bad[1]
    assert gone[0] == 2, gone[1]
