"""Crashes lose nothing and apply nothing twice: participant SIGKILL, broker restart."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from order_saga.broker import MosquittoBroker

from ..support import OUTCOMES, assert_outcomes, in_process_saga, needs_mosquitto, process_saga


@pytest.mark.parametrize("victim", ["payment", "inventory"])
@pytest.mark.slow
async def test_participant_sigkilled_while_events_arrive_catches_up_after_restart(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, victim: str
) -> None:
    """Kill a participant mid-burst, keep sending, restart it: every saga ends exactly right."""
    async with process_saga(session_broker.url, prefix, tmp_path) as (saga, procs):
        cycle = itertools.cycle(OUTCOMES)
        first = [next(cycle) for _ in range(12)]
        placed = dict(zip(await asyncio.gather(*(saga.place(o) for o in first)), first, strict=True))
        procs[victim].kill()
        second = [next(cycle) for _ in range(12)]
        placed |= dict(zip(await asyncio.gather(*(saga.place(o) for o in second)), second, strict=True))
        await asyncio.sleep(0.5)
        procs[victim].start()
        await procs[victim].wait_ready(saga.http)
        await assert_outcomes(saga, placed)


@needs_mosquitto
@pytest.mark.slow
async def test_broker_restart_mid_saga_loses_nothing(
    own_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Orders accepted while the broker is down wait in the outbox and complete once it is back."""
    async with in_process_saga(own_broker.url, prefix, tmp_path) as saga:
        cycle = itertools.cycle(OUTCOMES)
        first = [next(cycle) for _ in range(8)]
        placed = dict(zip(await asyncio.gather(*(saga.place(o) for o in first)), first, strict=True))
        own_broker.stop()
        second = [next(cycle) for _ in range(8)]
        placed |= dict(zip(await asyncio.gather(*(saga.place(o) for o in second)), second, strict=True))
        async with saga.http.get(f"{saga.urls['order']}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["broker"] is False
        await asyncio.sleep(0.5)
        own_broker.start()
        await assert_outcomes(saga, placed)
        async with saga.http.get(f"{saga.urls['order']}/readyz") as r:
            assert r.status == 200
