"""Each saga outcome reaches exactly the local states, versions and histories of the contract."""

from __future__ import annotations

import pytest

from order_saga import SAMPLES

from ..support import Saga


def _history(status: dict[str, object] | None) -> list[tuple[str, int]]:
    assert status is not None
    return [(h["state"], h["version"]) for h in status["history"]]  # type: ignore[index,attr-defined]


async def test_happy_path_confirms_order_with_every_part_at_its_expected_version(saga: Saga) -> None:
    """Payment authorizes, inventory reserves, shipping schedules, order confirms."""
    wf = await saga.place("happy")
    got = await saga.wait_states(wf, SAMPLES["happy"].parts)
    assert _history(got["order"]) == [("PENDING", 1), ("CONFIRMED", 2)]
    assert _history(got["payment"]) == [("AUTHORIZED", 1)]
    assert _history(got["inventory"]) == [("RESERVED", 1)]
    assert _history(got["shipping"]) == [("SCHEDULED", 1)]
    assert got["order"] and got["order"]["version"] == 2 and got["order"]["participant"] == "order"
    assert got["payment"] and got["payment"]["data"]["amount"] == 42.5


async def test_payment_above_limit_is_declined_and_order_cancelled(saga: Saga) -> None:
    """Declined payment: nobody else starts, order is cancelled."""
    wf = await saga.place("declined")
    got = await saga.wait_states(wf, SAMPLES["declined"].parts)
    assert _history(got["order"]) == [("PENDING", 1), ("CANCELLED", 2)]
    assert _history(got["payment"]) == [("DECLINED", 1)]


async def test_out_of_stock_refunds_payment_and_cancels_order(saga: Saga) -> None:
    """Inventory rejects: payment is refunded, which cancels the order."""
    wf = await saga.place("out-of-stock")
    got = await saga.wait_states(wf, SAMPLES["out-of-stock"].parts)
    assert _history(got["payment"]) == [("AUTHORIZED", 1), ("REFUNDED", 2)]
    assert _history(got["inventory"]) == [("REJECTED", 1)]
    assert _history(got["order"]) == [("PENDING", 1), ("CANCELLED", 2)]


async def test_shipping_failure_releases_stock_refunds_and_cancels(saga: Saga) -> None:
    """Shipping to XX fails: inventory releases, payment refunds, order cancels."""
    wf = await saga.place("unshippable")
    got = await saga.wait_states(wf, SAMPLES["unshippable"].parts)
    assert _history(got["shipping"]) == [("FAILED", 1)]
    assert _history(got["inventory"]) == [("RESERVED", 1), ("RELEASED", 2)]
    assert _history(got["payment"]) == [("AUTHORIZED", 1), ("REFUNDED", 2)]
    assert _history(got["order"]) == [("PENDING", 1), ("CANCELLED", 2)]


@pytest.mark.parametrize("outcome", sorted(SAMPLES))
async def test_client_chosen_order_id_is_the_workflow_id(saga: Saga, outcome: str) -> None:
    """``order_id`` in the body becomes the workflow id every participant reports."""
    wf = await saga.place(outcome, order_id=f"client:{outcome}.1")
    assert wf == f"client:{outcome}.1"
    await saga.wait_states(wf, SAMPLES[outcome].parts)
