"""The saga on a 3-node NATS JetStream cluster (its MQTT listeners) losing the node everyone uses.

Every participant is given all three node URLs and connects to the first; that node is
SIGKILLed mid-load and never restarted. Each client moves on to the next node and resumes its
persistent session there (the cluster keeps sessions and queued messages on three replicas).
Every saga must end as its sample says, with no redrive (the cluster lost nothing it had
acknowledged), and each participant's count of applied events must be exactly what the sagas
need: nothing lost with the node, nothing applied twice. The aggregator reads in ``events``
mode from the same cluster: its feed moves to another node too, and the views stay right.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from aggregator import Aggregator, load_definition
from order_saga import SAMPLES
from order_saga.broker import NatsCluster

from ..support import counts, in_process_saga, until, wait_sagas_done

SAGAS = 120


@pytest.mark.slow
async def test_node_sigkilled_mid_load_every_saga_finishes_on_the_others_with_exact_counts(
    nats_cluster: NatsCluster, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = list(itertools.islice(itertools.cycle(SAMPLES), SAGAS))
    url = nats_cluster.url
    assert len(url.nodes) == 3
    async with in_process_saga(url, prefix, tmp_path) as saga:
        definition = load_definition().with_urls(saga.urls).with_settings(freshness="events")
        async with Aggregator(definition, broker=url, prefix=prefix) as agg:
            assert agg.feed is not None
            await asyncio.wait_for(agg.feed.up.wait(), 30)
            before = {n: (await counts(saga.http, u)) for n, u in saga.urls.items()}
            placing = asyncio.gather(*(saga.place(o, order_id=f"node-{i}") for i, o in enumerate(outcomes)))
            await asyncio.sleep(0.2)
            nats_cluster.kill(0)  # the node every participant is connected to; it stays down
            placed = await placing
            expected = {wf: SAMPLES[o] for wf, o in zip(placed, outcomes, strict=True)}
            done = await wait_sagas_done(agg, expected, timeout=120)
            await asyncio.sleep(1.0)  # duplicates from any redrive land; nothing more may apply
            after = {n: (await counts(saga.http, u)) for n, u in saga.urls.items()}
            # The feed lost its node too, and comes back on another (after the cluster's elections).
            await asyncio.wait_for(agg.feed.up.wait(), 60)
            assert agg.feed.outages >= 1
            # The link that publishes workflow events only publishes: it finds its node gone when
            # a publish fails, which on a loaded machine may come after the sagas are done.
            killed = f"mqtt://127.0.0.1:{nats_cluster.nodes[0].mqtt_port}"
            await until(lambda: any(m.startswith("workflow events:") for m in links_lost(caplog, killed)), 30)
    missing = {w: s.state for w, s in expected.items() if done.get(w) != s.state}
    assert missing == {}, f"{len(missing)} sagas did not finish"
    needed = {n: sum(SAMPLES[o].applied[n] for o in outcomes) for n in saga.urls}
    assert {n: after[n]["applied"] - before[n]["applied"] for n in saga.urls} == needed
    # Every participant lost its node and came back on another one of the cluster.
    assert all(after[n]["connects"] - before[n]["connects"] >= 1 for n in saga.urls), after
    lost = links_lost(caplog, killed)
    # The participants, the event feed and the link that publishes workflow events.
    assert {m.split(":", 1)[0] for m in lost} == {*saga.urls, "event feed", "workflow events"}


def links_lost(caplog: pytest.LogCaptureFixture, node: str) -> list[str]:
    """The log lines that say a broker link to ``node`` was lost."""
    return [r.getMessage() for r in caplog.records if f"broker link to {node} lost" in r.getMessage()]
