"""200 concurrent orders through the participants CLI survive a participant's SIGKILL and restart.

An outside MQTT client listens to every saga event and re-publishes some of them (duplicates a
consumer must ignore) while the run is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from pathlib import Path

import aiomqtt
import pytest

from order_saga.broker import MosquittoBroker

from ..support import OUTCOMES, Listener, assert_outcomes, process_saga

ORDERS = 200


@pytest.mark.parametrize("victim", ["order", "payment", "inventory", "shipping"])
@pytest.mark.slow
async def test_200_concurrent_orders_reach_right_states_despite_sigkill(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, victim: str
) -> None:
    """All four outcomes, 200 orders at once, one participant killed and restarted mid-run."""
    broker = session_broker.url
    async with (
        process_saga(broker, prefix, tmp_path) as (saga, procs),
        Listener(broker, f"{prefix}/+/+") as heard,
    ):
        started = time.monotonic()
        cycle = itertools.cycle(OUTCOMES)
        outcomes = [next(cycle) for _ in range(ORDERS)]
        ids = await asyncio.gather(*(saga.place(o) for o in outcomes))
        placed = dict(zip(ids, outcomes, strict=True))
        # Kill once the saga is visibly in flight, and replay some events as an outsider would.
        await heard.wait_for(lambda h: len(h.messages) >= ORDERS // 2)
        procs[victim].kill()
        replay = random.Random(7).sample(list(heard.messages), 40)
        async with aiomqtt.Client(broker.host, broker.port) as outsider:
            for topic, payload in replay:
                await outsider.publish(topic, payload, qos=1)
        await asyncio.sleep(0.3)
        procs[victim].start()
        await procs[victim].wait_ready(saga.http)
        await assert_outcomes(saga, placed, timeout=30)
        elapsed = time.monotonic() - started

        def created() -> set[str]:
            return {json.loads(p)["subject"] for p in heard.on(f"{prefix}/order/created")}

        # The outside listener shares this busy test process: give it time to catch up.
        with contextlib.suppress(TimeoutError):
            await heard.wait_for(lambda h: created() >= set(ids), timeout=10)
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert created() == set(ids)
    print(f"\n{ORDERS} orders, {victim} killed: all terminal in {elapsed:.2f}s")
