"""A compensation that fans out, lost for one of its consumers only, and how it gets repaired.

``shipping.failed`` is the saga's only event with two consumers whose branches end apart:
payment refunds (then order cancels) and inventory releases. A broker that dies loses events it
had acknowledged (tests/aggregator/test_broker_crash.py); when it loses inventory's copy but not
payment's, order reaches CANCELLED while inventory stays RESERVED: the packaged definition
derives COMPENSATING (step inventory), not terminal, and only a redrive (shipping republishing
``shipping.failed`` with its original id) can finish the saga.

The loss is simulated at inventory's consumer: its first ``shipping.failed`` of the workflow is
acknowledged without being applied, exactly what inventory sees when the broker forgot its copy.
The stall scan must find such a saga although its initiator is in a state a terminal rule names
(``{order = CANCELLED}``): an earlier, non-terminal rule still matches it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aggregator import Aggregator, _redrive, load_definition
from contract import CloudEvent
from order_saga import SAMPLES

from ..support import Saga, counts

STALL_MS = 300
#: Where the lost copy leaves the unshippable saga: the initiator is at its end, inventory is not.
LOST = {"order": "CANCELLED", "payment": "REFUNDED", "inventory": "RESERVED", "shipping": "FAILED"}


def _lose_inventorys_copy(saga: Saga, monkeypatch: pytest.MonkeyPatch, workflow_id: str) -> list[str]:
    """From now on, inventory's first ``shipping.failed`` of ``workflow_id`` is acknowledged, never applied."""
    inventory = saga.services["inventory"]
    apply = inventory.apply
    lost: list[str] = []

    def lossy(event: CloudEvent) -> bool:
        if event.type == "shipping.failed" and event.subject == workflow_id and not lost:
            lost.append(event.id)
            return True  # as if the broker had never delivered it: nothing applied, nothing recorded
        return apply(event)

    monkeypatch.setattr(inventory, "apply", lossy)
    return lost


async def _lost_for_inventory(saga: Saga, monkeypatch: pytest.MonkeyPatch, workflow_id: str) -> None:
    lost = _lose_inventorys_copy(saga, monkeypatch, workflow_id)
    await saga.place("unshippable", order_id=workflow_id)
    await saga.wait_states(workflow_id, LOST)
    assert len(lost) == 1


async def test_a_republished_compensation_reaches_the_consumer_that_lost_it(
    saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shipping republishes shipping.failed (original id): inventory, which never applied it,
    releases; payment, which did, drops it as a duplicate. The participants hold no record
    that would make the redrive useless."""
    await _lost_for_inventory(saga, monkeypatch, "ro-1")
    before = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
    async with saga.http.post(f"{saga.urls['shipping']}/outbox/ro-1/republish") as r:
        assert r.status == 202
        assert await r.json() == {"republished": 1}
    got = await saga.wait_states("ro-1", SAMPLES["unshippable"].parts)
    await asyncio.sleep(0.2)  # payment's duplicate lands
    after = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
    assert got["inventory"] is not None and got["inventory"]["version"] == 2
    assert {n: after[n]["applied"] - before[n]["applied"] for n in saga.urls} == {
        "order": 0,
        "payment": 0,
        "inventory": 1,
        "shipping": 0,
    }
    assert after["payment"]["duplicates"] - before["payment"]["duplicates"] == 1


@pytest.mark.slow
async def test_a_saga_whose_initiator_ended_first_is_listed_as_stalled(
    saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Order CANCELLED, inventory still RESERVED: the view is COMPENSATING and stalled, so the
    stall scan (through the initiator's listing) must find it."""
    await _lost_for_inventory(saga, monkeypatch, "ro-2")
    definition = load_definition().with_urls(saga.urls).with_settings(stall_after_ms=STALL_MS)
    async with Aggregator(definition) as agg:
        await asyncio.sleep(STALL_MS / 1000 + 0.3)
        view = await agg.view("ro-2")
        assert (view.state, view.stalled) == ("COMPENSATING", True)
        found = [v.workflow_id for v in await agg.stalled()]
    assert found == ["ro-2"]


@pytest.mark.slow
async def test_auto_redrive_finishes_a_saga_whose_initiator_ended_first(
    saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What tests/aggregator/test_broker_crash.py needs (crash-3, crash-19: unshippable sagas
    left with inventory RESERVED): ``redrive="auto"`` finishes the saga by itself."""
    await _lost_for_inventory(saga, monkeypatch, "ro-3")
    definition = load_definition().with_urls(saga.urls).with_settings(stall_after_ms=STALL_MS)
    async with Aggregator(definition, redrive="auto") as agg:
        deadline = time.monotonic() + 6.0  # a scan every second once stalled
        while time.monotonic() < deadline:
            view = await agg.view("ro-3")
            if view.state == "COMPENSATED":
                break
            await asyncio.sleep(0.1)
        redrives = agg.metrics.value("aggregator_redrives_total", participant="order", outcome="ok")
    assert {n: p.state for n, p in view.parts.items()} == SAMPLES["unshippable"].parts
    assert (view.state, redrives) == ("COMPENSATED", 1)


@pytest.mark.slow
async def test_the_auto_scan_gets_past_finished_workflows_its_initiator_cannot_tell_apart(
    saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three declined orders (order CANCELLED, over) are older than the stalled one: with scans of
    at most two workflows, a scan that always began with the oldest would never reach it; the
    auto scan resumes where the previous one stopped."""
    for i in range(3):
        await saga.place("declined", order_id=f"ro-old-{i}")
        await saga.wait_states(f"ro-old-{i}", SAMPLES["declined"].parts)
    await _lost_for_inventory(saga, monkeypatch, "ro-4")
    monkeypatch.setattr(_redrive, "SCAN_MAX", 2)
    definition = load_definition().with_urls(saga.urls).with_settings(stall_after_ms=STALL_MS)
    async with Aggregator(definition, redrive="auto") as agg:
        await asyncio.sleep(STALL_MS / 1000 + 0.1)
        assert [v.workflow_id for v in await agg.stalled()] == []  # the two oldest: both over
        deadline = time.monotonic() + 8.0  # a scan every second
        while time.monotonic() < deadline:
            view = await agg.view("ro-4")
            if view.state == "COMPENSATED":
                break
            await asyncio.sleep(0.1)
    assert (view.state, view.parts["inventory"].state) == ("COMPENSATED", "RELEASED")
