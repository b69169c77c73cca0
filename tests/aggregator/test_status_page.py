"""The status page in a real browser: headless Chromium (the distribution's), driven by Playwright.

Real participants, a real aggregator on port 0, the page as the aggregator serves it. The page
finds a workflow, shows its four parts and its timeline in order, follows a saga by itself
through the watch stream, lists a stalled workflow and redrives it with the token. Screenshots
go to ``build/test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import Aggregator, load_definition
from aggregator.web import create_app
from contract import serve_app
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import (
    LIBFAKETIME,
    Saga,
    gateway_example,
    serve_aggregator,
    skewed_participant,
    some_participants,
)

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="pip install -e '.[dev]' brings playwright"
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs the distribution's chromium (.ci/run installs it)"
)
#: Flags for a headless Chromium on a machine with no network beyond loopback and no sandbox.
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 15_000


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1200, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == [], f"the page's script failed: {errors}"
        finally:
            await browser.close()


@pytest.mark.slow
async def test_page_finds_a_workflow_and_shows_its_parts_and_timeline(saga: Saga, page: Any) -> None:
    wf = await saga.place("unshippable")
    statuses = await saga.wait_states(wf, SAMPLES["unshippable"].parts)
    async with serve_aggregator(saga.urls) as served:
        answer = await page.goto(f"{served.url}/ui/")
        assert answer.status == 200
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        await page.get_by_label("Workflow id").fill(wf)
        await page.get_by_role("button", name="Show").click()
        await page.locator("#wf-state", has_text="COMPENSATED").wait_for()
        rows = page.locator("#parts tbody tr")
        assert await rows.count() == 4
        shown = {
            await row.locator("th").inner_text(): await row.locator("td").first.inner_text()
            for row in await rows.all()
        }
        assert shown == {n: s or "—" for n, s in SAMPLES["unshippable"].parts.items()}
        expected = sorted(
            (h["at"], name, h["version"], h["state"])
            for name, status in statuses.items()
            if status
            for h in status["history"]
        )
        items = page.locator("#timeline li")
        await items.nth(len(expected) - 1).wait_for()
        assert await items.all_inner_texts() == [f"{at} — {n} {state} (v{v})" for at, n, v, state in expected]
        assert await page.locator("#lanes circle").count() == len(expected)
        assert f"?id={wf}" in page.url  # a link people can share
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        # Opening the shared link shows the same workflow.
        await page.goto(f"{served.url}/ui/?id={wf}")
        await page.locator("#wf-state", has_text="COMPENSATED").wait_for()


@pytest.mark.slow
async def test_page_follows_a_saga_by_itself(saga: Saga, page: Any) -> None:
    """Opened before the order exists; it shows the saga without a reload once it is placed."""
    async with serve_aggregator(saga.urls, freshness="ttl", ttl_ms=50, watch_poll_ms=100) as served:
        await page.goto(f"{served.url}/ui/?id=live-1")
        await page.locator("#status", has_text="Waiting").wait_for()
        await saga.place("happy", order_id="live-1")
        await page.locator("#wf-state", has_text="COMPLETED").wait_for()
        await page.locator("#timeline li").nth(4).wait_for()  # order x2, payment, inventory, shipping
        assert "live" in await page.locator("#status").inner_text()


@pytest.mark.slow
async def test_page_lists_a_stalled_workflow_and_redrives_it_with_the_token(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, page: Any
) -> None:
    token = "page-test-token"
    async with some_participants(session_broker, prefix, tmp_path, ["order"]) as alone:
        # Only the order service runs on this prefix: order.created reaches nobody; the workflow waits.
        dead = {n: "http://127.0.0.1:9" for n in ("payment", "inventory", "shipping")}
        definition = load_definition().with_urls({**alone, **dead}).with_settings(stall_after_ms=300)
        async with (
            aiohttp.ClientSession() as http,
            Aggregator(definition) as agg,
            serve_app(create_app(agg, token=token)) as url,
        ):
            async with http.post(
                f"{alone['order']}/orders", json=SAMPLES["happy"].body(order_id="stuck-1")
            ) as r:
                assert r.status == 202
            answer = await page.goto(f"{url}/ui/")
            assert answer.status == 200  # the page itself needs no token
            await page.locator("#stalled-status", has_text="needs a token").wait_for()
            await asyncio.sleep(0.5)  # past stall_after_ms
            await page.locator("#auth summary").click()
            await page.get_by_label("Bearer token").fill(token)
            await page.get_by_label("Bearer token").press("Tab")  # "change" fires
            row = page.locator("#stalled-list tbody tr", has_text="stuck-1")
            await row.wait_for()
            await page.get_by_role("button", name="Redrive stuck-1").click()
            await row.locator("[role=status]", has_text="order republished 1").wait_for()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "status-page-stalled.png"), full_page=True)
    assert agg.metrics.value("aggregator_redrives_total", participant="order", outcome="ok") == 1


@pytest.mark.slow
async def test_page_works_where_a_gateway_mounts_the_aggregator(saga: Saga, page: Any) -> None:
    """examples/gateway.py mounts the aggregator under /status-api/: the page's calls follow it there."""
    module = gateway_example()
    wf = await saga.place("declined")
    await saga.wait_states(wf, SAMPLES["declined"].parts)
    async with serve_app(module.build_gateway(load_definition().with_urls(saga.urls))) as base:
        answer = await page.goto(f"{base}/status-api/ui")  # redirected to .../ui/
        assert answer.status == 200 and page.url.endswith("/status-api/ui/")
        await page.goto(f"{base}/status-api/ui/?id={wf}")
        await page.locator("#wf-state", has_text="FAILED").wait_for()
        await page.locator("#timeline li").nth(2).wait_for()  # order x2, payment


@pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (.ci/run installs it)")
@pytest.mark.slow
async def test_page_with_a_participant_five_minutes_ahead(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, page: Any
) -> None:
    """payment's clock is 5 min ahead: its row carries a clock badge and a true age (seconds, not
    "in 5 min"), the timeline starts with the order, and no label is drawn over another."""
    async with (
        skewed_participant("payment", session_broker, prefix, tmp_path, +300.0) as payment,
        some_participants(session_broker, prefix, tmp_path, ["order", "inventory", "shipping"]) as urls,
    ):
        urls = {**urls, "payment": payment}
        async with aiohttp.ClientSession() as http, serve_aggregator(urls) as served:
            async with http.post(f"{urls['order']}/orders", json=SAMPLES["unshippable"].body()) as r:
                wf = (await r.json())["workflow_id"]
            while (await served.agg.view(wf)).state != SAMPLES["unshippable"].state:
                await asyncio.sleep(0.05)
            await page.goto(f"{served.url}/ui/?id={wf}")
            await page.locator("#wf-state", has_text="COMPENSATED").wait_for()
            row = page.locator('#parts tbody tr[data-participant="payment"]')
            badge = row.locator(".badge.skew")
            await badge.wait_for()
            assert (await badge.inner_text()).startswith(("clock 5.0 min ahead", "clock 4.9 min ahead"))
            assert await page.locator(".badge.skew").count() == 1
            updated = await row.locator("td").last.inner_text()
            assert updated.endswith((" ms ago", " s ago")), updated
            async with http.get(f"{served.url}/workflows/{wf}/timeline") as r:
                entries = (await r.json())["entries"]
            items = page.locator("#timeline li")
            await items.nth(len(entries) - 1).wait_for()
            assert await items.count() == len(entries) >= 6
            first = await items.first.inner_text()
            assert " — order PENDING (v1)" in first, first
            boxes = await page.evaluate(
                """() => [...document.querySelectorAll('#lanes text')]
                       .filter((t) => t.getAttribute('x') !== '8')
                       .map((t) => { const b = t.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; })"""
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "status-page-skewed.png"), full_page=True)
    assert len(boxes) >= 4
    overlapping = [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    ]
    assert overlapping == []
