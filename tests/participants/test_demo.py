"""The no-setup demo's pieces: the saga on a private Mosquitto and on the embedded amqtt fallback."""

from __future__ import annotations

from order_saga import SAMPLES
from order_saga.demo import local_saga, run_samples
from order_saga.embedded_broker import EmbeddedBroker

from ..support import needs_mosquitto


@needs_mosquitto
async def test_samples_end_as_expected_on_private_mosquitto() -> None:
    """local_saga() with no broker starts Mosquitto; every sample ends in its expected states."""
    async with local_saga() as saga:
        results = await run_samples(saga)
    assert set(results) == set(SAMPLES)
    assert all(ok for _, ok in results.values()), results


async def test_samples_end_as_expected_on_embedded_amqtt_broker() -> None:
    """Without Mosquitto the demo falls back to amqtt in-process; the saga still completes."""
    async with EmbeddedBroker() as broker, local_saga(broker=broker.url, prefix="emb") as saga:
        results = await run_samples(saga)
        assert saga.states("demo-unshippable") == SAMPLES["unshippable"].parts
    assert all(ok for _, ok in results.values()), results
