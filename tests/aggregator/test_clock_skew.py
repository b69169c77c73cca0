"""A participant whose clock is five minutes off (libfaketime on a real participant process).

Ahead, on demand: its stall is reported after ``stall_after_ms``, not five minutes later; the
offset is measured from its answers' ``Date`` (``/healthz``, the gauge, one WARNING, the part's
``clock_offset_ms``); the timeline puts its entries after their causes. Behind, in events mode:
views do not report five minutes of staleness, probes pin the offset down to milliseconds, and
the timeline still starts with the order.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import Aggregator, load_definition
from aggregator.web import create_app
from contract import serve_app
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import LIBFAKETIME, skewed_participant, some_participants, until

SKEW_S = 300.0
STALL_MS = 1500
DEAD = "http://127.0.0.1:9"

pytestmark = pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (.ci/run installs it)")


def skewed_payment(broker: MosquittoBroker, prefix: str, tmp: Path, offset_s: float) -> Any:
    return skewed_participant("payment", broker, prefix, tmp, offset_s)


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.slow
async def test_a_participant_ahead_is_measured_and_does_not_hide_a_stall(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="aggregator.clocks")
    async with (
        skewed_payment(session_broker, prefix, tmp_path, +SKEW_S) as payment,
        some_participants(session_broker, prefix, tmp_path, ["order"]) as urls,
    ):
        # Inventory is not there: the saga stops once payment has authorized.
        definition = (
            load_definition()
            .with_urls({**urls, "payment": payment, "inventory": DEAD, "shipping": DEAD})
            .with_settings(stall_after_ms=STALL_MS)
        )
        async with (
            Aggregator(definition) as agg,
            serve_app(create_app(agg)) as url,
            aiohttp.ClientSession() as http,
        ):
            async with http.post(f"{urls['order']}/orders", json=SAMPLES["happy"].body(order_id="sk-1")) as r:
                assert r.status == 202
            view: dict[str, Any] = {}

            async def authorized() -> bool:
                nonlocal view
                view = await get(http, f"{url}/workflows/sk-1")
                return bool(view["parts"]["payment"]["state"] == "AUTHORIZED")

            await until(authorized, timeout=15)
            authorized_at = time.monotonic()
            assert view["stalled"] is False

            async def stalled() -> bool:
                nonlocal view
                view = await get(http, f"{url}/workflows/sk-1")
                return bool(view["stalled"])

            await until(stalled, timeout=STALL_MS / 1000 + 10)
            stalled_after = time.monotonic() - authorized_at
            health = await get(http, f"{url}/healthz")
            timeline = await get(http, f"{url}/workflows/sk-1/timeline")
            listed = await get(http, f"{url}/workflows?stalled=true")
            gauge = agg.metrics.value("aggregator_participant_clock_offset_seconds", participant="payment")

    # Reported stalled about stall_after_ms after payment's last change, not five minutes later.
    assert stalled_after < STALL_MS / 1000 + 3, stalled_after
    assert [v["workflow_id"] for v in listed["views"]] == ["sk-1"]
    # The offset, from Date headers (whole seconds): the middle of an interval a second wide at most.
    measured = view["parts"]["payment"]["clock_offset_ms"]
    assert SKEW_S * 1000 - 1000 <= measured <= SKEW_S * 1000 + 1000, measured
    assert "clock_offset_ms" not in view["parts"]["order"]
    offsets = health["clock_offset_ms"]
    assert offsets["payment"] == measured
    assert offsets["order"] == 0.0  # the same clock: not corrected
    assert offsets["inventory"] is None and offsets["shipping"] is None  # never answered
    assert gauge * 1000 == pytest.approx(measured, abs=0.001)
    warnings = [r.getMessage() for r in caplog.records if r.name == "aggregator.clocks"]
    assert len(warnings) == 1
    assert re.match(r"payment's clock is ahead of this aggregator's by (299|300)\.\d{3} s", warnings[0]), (
        warnings
    )
    # The timeline: payment's AUTHORIZED after the order's PENDING that caused it.
    entries = timeline["entries"]
    assert [(e["participant"], e["state"]) for e in entries][:2] == [
        ("order", "PENDING"),
        ("payment", "AUTHORIZED"),
    ]
    assert entries[1]["cause"] == entries[0]["event"]
    assert entries[1]["clock_offset_ms"] == measured
    assert entries[1]["at"] > entries[0]["at"]  # as payment wrote it: five minutes "later"


@pytest.mark.slow
async def test_a_participant_behind_in_events_mode_reports_no_false_staleness(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    async with (
        skewed_payment(session_broker, prefix, tmp_path, -SKEW_S) as payment,
        some_participants(session_broker, prefix, tmp_path, ["order", "inventory", "shipping"]) as urls,
    ):
        definition = (
            load_definition().with_urls({**urls, "payment": payment}).with_settings(freshness="events")
        )
        async with (
            Aggregator(definition, broker=session_broker.url, prefix=prefix) as agg,
            serve_app(create_app(agg)) as url,
            aiohttp.ClientSession() as http,
        ):
            assert agg.feed is not None
            async with asyncio.timeout(10):
                await agg.feed.up.wait()
            await until(lambda: set(definition.participants) <= set(agg.feed.heard), timeout=10)
            async with http.post(f"{urls['order']}/orders", json=SAMPLES["happy"].body(order_id="sk-2")) as r:
                assert r.status == 202
            view: dict[str, Any] = {}

            async def done() -> bool:
                nonlocal view
                view = await get(http, f"{url}/workflows/sk-2")
                return bool(view["state"] == SAMPLES["happy"].state)

            await until(done, timeout=20)
            # The probes pin payment's offset down: the interval narrows to 20 ms.
            await until(
                lambda: agg.clocks["payment"].bounds[1] - agg.clocks["payment"].bounds[0] <= 0.02, timeout=20
            )
            lo, hi = agg.clocks["payment"].bounds
            view = await get(http, f"{url}/workflows/sk-2")
            health = await get(http, f"{url}/healthz")
            timeline = await get(http, f"{url}/workflows/sk-2/timeline")

    assert lo <= -SKEW_S + 0.1 and hi >= -SKEW_S - 0.1 and hi - lo <= 0.02, (lo, hi)
    assert -SKEW_S * 1000 - 100 <= health["clock_offset_ms"]["payment"] <= -SKEW_S * 1000 + 100
    # Watermarks keep a quiet workflow's parts known current: staleness is about their interval,
    # not the five minutes payment's clock is behind.
    assert view["parts"]["payment"]["source"] in ("event", "cache")  # no call made for this view
    assert view["staleness_ms"] < 3000, view["staleness_ms"]
    entries = timeline["entries"]
    assert (entries[0]["participant"], entries[0]["state"]) == ("order", "PENDING")
    payment_first = next(i for i, e in enumerate(entries) if e["participant"] == "payment")
    assert entries[payment_first]["cause"] == entries[0]["event"]
    assert entries[payment_first]["at"] < entries[0]["at"]  # as payment wrote it: five minutes "earlier"
