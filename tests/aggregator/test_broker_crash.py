"""A broker SIGKILLed under load loses events it had acknowledged; auto redrive finishes every saga.

Mosquitto keeps its state in memory between saves: killed, it forgets queued events it had
already acknowledged to their producers, which marked them sent. Without help those sagas wait
for ever. With ``redrive="auto"`` the aggregator finds them stalled and has the participants
republish; inboxes drop duplicates. The participants' counts of applied events must be exactly
what the sagas need: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from aggregator import Aggregator, load_definition
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import counts, in_process_saga, needs_mosquitto, wait_sagas_done

SAGAS = 80
STALL_MS = 1500


@needs_mosquitto
@pytest.mark.slow
async def test_sigkilled_broker_mid_load_every_saga_finishes_with_exact_counts(
    own_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    outcomes = list(itertools.islice(itertools.cycle(SAMPLES), SAGAS))
    async with in_process_saga(own_broker.url, prefix, tmp_path) as saga:
        definition = load_definition().with_urls(saga.urls).with_settings(stall_after_ms=STALL_MS)
        async with Aggregator(definition, redrive="auto") as agg:
            before = {n: (await counts(saga.http, u))["applied"] for n, u in saga.urls.items()}
            placing = asyncio.gather(*(saga.place(o, order_id=f"crash-{i}") for i, o in enumerate(outcomes)))
            await asyncio.sleep(0.15)
            own_broker.kill()  # mid-load: acknowledged events still in memory are gone
            placed = await placing
            await asyncio.sleep(0.3)
            own_broker.start()
            expected = {wf: SAMPLES[o] for wf, o in zip(placed, outcomes, strict=True)}
            done = await wait_sagas_done(agg, expected, timeout=90)
            stuck_views, _ = await agg.views([w for w in expected if w not in done])
            stuck = {
                v.workflow_id: {n: (p.state, p.version) for n, p in v.parts.items()} for v in stuck_views
            }
            await asyncio.sleep(1.0)  # duplicates from redrives land; nothing more may apply
            after = {n: (await counts(saga.http, u))["applied"] for n, u in saga.urls.items()}
            redrives = agg.metrics.value("aggregator_redrives_total", participant="order", outcome="ok")
    missing = {w: s.state for w, s in expected.items() if done.get(w) != s.state}
    assert missing == {}, f"{len(missing)} sagas did not finish (redrives: {redrives}); their parts: {stuck}"
    needed = {n: sum(SAMPLES[o].applied[n] for o in outcomes) for n in saga.urls}
    assert {n: after[n] - before[n] for n in saga.urls} == needed
