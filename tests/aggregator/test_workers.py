"""``serve --workers N``: N processes on one port, each a whole aggregator, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import Saga


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "serve", "--port", "0", *args,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = ""
            while not line.startswith("aggregator: serving"):  # log lines (stderr) come first
                line = (await proc.stdout.readline()).decode()
                assert line, "the supervisor ended before serving"
        assert "2 workers, one port" in line, line
    except BaseException:
        proc.send_signal(signal.SIGTERM)  # never leave a supervisor (and its workers) behind
        await proc.wait()
        raise
    url = line.split(" on ", 1)[1].split(" ", 1)[0]
    return proc, url


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.slow
async def test_two_workers_share_one_port_each_with_its_own_feed_and_stop_together(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Both workers answer on the one port (events mode: each subscribed), and SIGTERM stops all."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    overrides = [a for n, u in saga.urls.items() for a in ("--participant", f"{n}={u}")]
    proc, url = await _start(
        "--workers", "2", "--freshness", "events", "--broker", str(session_broker.url), "--prefix", prefix,
        *overrides,
    )  # fmt: skip
    try:
        workers = _children(proc.pid)
        assert len(workers) == 2
        seen: dict[int, dict[str, object]] = {}
        for _ in range(200):
            # A new connection each time: the kernel spreads connections over the workers.
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/healthz") as r:
                    pid = (await r.json())["pid"]
                async with http.get(f"{url}/readyz") as r:
                    ready = await r.json()
                async with http.get(f"{url}/workflows/{wf}") as r:
                    view = await r.json()
            assert view["state"] == "COMPLETED"
            seen[pid] = ready  # the latest answer of each worker: its feed connects on its own
            if len(seen) == 2 and all(r["event_feed"]["connected"] for r in seen.values()):
                break
            await asyncio.sleep(0.02)
        assert sorted(seen) == sorted(workers)
        assert all(r["event_feed"]["connected"] for r in seen.values())
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await proc.wait()
        assert proc.returncode == 0
        assert not [p for p in workers if _alive(p)]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_a_worker_that_dies_stops_the_others(saga: Saga) -> None:
    """A SIGKILLed worker: the supervisor stops the other one and exits 1."""
    overrides = [a for n, u in saga.urls.items() for a in ("--participant", f"{n}={u}")]
    proc, _ = await _start("--workers", "2", *overrides)
    try:
        first, second = _children(proc.pid)
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(15):
            await proc.wait()
        assert proc.returncode == 1
        assert not _alive(second)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_workers_stop_when_their_supervisor_is_killed(saga: Saga) -> None:
    """A SIGKILLed supervisor cannot stop its workers: they notice and stop themselves."""
    overrides = [a for n, u in saga.urls.items() for a in ("--participant", f"{n}={u}")]
    proc, _ = await _start("--workers", "2", *overrides)
    workers = _children(proc.pid)
    try:
        proc.kill()
        await proc.wait()
        for _ in range(200):
            if not [p for p in workers if _alive(p)]:
                break
            await asyncio.sleep(0.05)
        assert [p for p in workers if _alive(p)] == []
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
