"""The status page in a real browser: headless Chromium (the distribution's), driven by Playwright.

Real participants, a real aggregator on port 0, the page as the aggregator serves it. The page
finds a workflow, shows its four parts and its timeline in order, follows a saga by itself
through the watch stream, lists a stalled workflow and redrives it with the token; it counts the
workflows in flight, lists them by state and age a page at a time, groups the stalled ones by
why they stall and redrives a group as a job. Screenshots go to ``build/test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import Aggregator, _fleet, load_definition
from aggregator.view import View
from aggregator.web import create_app
from contract import new_event, serve_app
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import (
    LIBFAKETIME,
    Saga,
    gateway_example,
    publish,
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
        # The counts, the steps and the list of workflows in flight come from there too.
        await page.locator('#counts [data-state="FAILED"] dd', has_text="1").wait_for()
        await page.locator("#fleet-list tbody tr", has_text=wf).wait_for()
        assert await page.locator("#fleet-step option").all_inner_texts() == [
            "any step",
            *SAMPLES["declined"].parts,
        ]


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


async def place(http: aiohttp.ClientSession, order_url: str, outcome: str, order_id: str) -> None:
    async with http.post(f"{order_url}/orders", json=SAMPLES[outcome].body(order_id=order_id)) as r:
        assert r.status == 202, await r.text()


async def until_view(agg: Aggregator, workflow_id: str, done: Any, timeout: float = 10.0) -> View:
    """Views ``workflow_id`` until ``done(view)``; the last view."""
    deadline = time.monotonic() + timeout
    while True:
        view = await agg.view(workflow_id)
        if done(view):
            return view
        assert time.monotonic() < deadline, f"{workflow_id}: {view.to_json()}"
        await asyncio.sleep(0.05)


async def table_ids(page: Any, rows: str) -> list[str]:
    return [await row.locator("th").inner_text() for row in await page.locator(rows).all()]


@pytest.mark.slow
async def test_page_counts_filters_and_pages_the_workflows_in_flight(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve orders the order service took alone stay in progress; two declined ones failed. The page
    counts them (complete), lists them, the in-progress ones ten at a time through the cursor with
    their ages, the failed ones on their own (a page that ended on the scan budget says so), none
    older than five minutes, and links each to its own view."""
    stuck = [f"fl-{i:02}" for i in range(1, 13)]
    failed = ["fl-d1", "fl-d2"]
    async with contextlib.AsyncExitStack() as stack:
        urls = await stack.enter_async_context(some_participants(session_broker, prefix, tmp_path, ["order"]))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for wf in stuck:
            await place(http, urls["order"], "happy", wf)
        # The others start late (new sessions): the stuck orders' order.created went nowhere.
        for name in ("payment", "inventory", "shipping"):
            urls |= await stack.enter_async_context(
                some_participants(session_broker, prefix, tmp_path, [name])
            )
        for wf in failed:
            await place(http, urls["order"], "declined", wf)
        served = await stack.enter_async_context(serve_aggregator(urls))
        for wf in failed:
            await until_view(served.agg, wf, lambda v: v.state == "FAILED")

        await page.goto(f"{served.url}/ui/")
        await page.locator('#counts [data-state="IN_PROGRESS"] dd', has_text="12").wait_for()
        assert await page.locator('#counts [data-state="FAILED"] dd').inner_text() == "2"
        assert await page.locator('#counts [data-state="COMPLETED"] dd').inner_text() == "0"
        await page.locator("#counts-status", has_text="Complete").wait_for()
        # At first the states that have workflows are checked and listed (25 a page: all of them).
        in_progress = page.get_by_role("checkbox", name="IN_PROGRESS", exact=True)
        failed_box = page.get_by_role("checkbox", name="FAILED", exact=True)
        assert await in_progress.is_checked() and await failed_box.is_checked()
        assert not await page.get_by_role("checkbox", name="COMPLETED", exact=True).is_checked()
        status = page.locator("#fleet-status")
        await status.filter(has_text="Page 1: 14 workflows").wait_for()
        assert "no more pages" in await status.inner_text()
        assert sorted(await table_ids(page, "#fleet-list tbody tr")) == sorted(stuck + failed)

        # In progress only, ten a page: the cursor goes on, oldest first.
        await failed_box.uncheck()
        await page.get_by_label("Per page").select_option("10")
        await page.get_by_role("button", name="List workflows").click()
        await status.filter(has_text="Page 1: 10 workflows (1\u201310)").wait_for()
        assert await table_ids(page, "#fleet-list tbody tr") == stuck[:10]
        rows = page.locator("#fleet-list tbody tr")
        assert set(await rows.locator("td:nth-child(2)").all_inner_texts()) == {"IN_PROGRESS"}
        assert set(await rows.locator("td:nth-child(3)").all_inner_texts()) == {"payment"}
        for age in await rows.locator("td:nth-child(4)").all_inner_texts():
            assert re.fullmatch(r"[0-9.]+ (ms|s) ago", age), age
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-page-fleet.png"), full_page=True)
        next_page = page.get_by_role("button", name="Next page")
        await next_page.click()
        await status.filter(has_text="Page 2: 2 workflows (11\u201312)").wait_for()
        assert await table_ids(page, "#fleet-list tbody tr") == stuck[10:]
        assert "no more pages" in await status.inner_text() and await next_page.is_hidden()

        # Failed only, with a scan budget of ten listed workflows a page: the first page ends on
        # it (the stuck orders come first), and says so; the next finds them.
        monkeypatch.setattr(_fleet, "PAGE_BUDGET", 1)
        await in_progress.uncheck()
        await failed_box.check()
        await page.get_by_role("button", name="List workflows").click()
        await status.filter(has_text="scan budget").wait_for()
        assert "Page 1: no matching workflow" in await status.inner_text()
        assert await rows.count() == 0
        await next_page.click()
        await status.filter(has_text="Page 2: 2 workflows").wait_for()
        assert sorted(await table_ids(page, "#fleet-list tbody tr")) == failed
        assert set(await rows.locator("td:nth-child(2)").all_inner_texts()) == {"FAILED"}

        # By age: nothing is older than five minutes; all changed within the last five.
        await in_progress.check()
        await page.get_by_label("Last change").select_option(label="older than 5 min")
        await page.get_by_role("button", name="List workflows").click()
        await status.filter(has_text="no matching workflow").wait_for()
        await page.get_by_label("Last change").select_option(label="any time")
        await page.get_by_label("Changed within").select_option(label="the last 5 min")
        await page.get_by_label("Per page").select_option("25")
        await page.get_by_role("button", name="List workflows").click()
        await status.filter(has_text="Page 1: 14 workflows").wait_for()

        # Each id opens that workflow's own view on the page.
        await page.get_by_role("link", name="fl-03", exact=True).first.click()
        await page.locator("#wf-id", has_text="fl-03").wait_for()
        await page.locator("#wf-state", has_text="IN_PROGRESS").wait_for()
        assert "?id=fl-03" in page.url
        assert (
            await page.get_by_role("link", name="fl-03", exact=True).first.get_attribute("href")
            == "?id=fl-03"
        )


@pytest.mark.slow
async def test_page_groups_the_stalled_workflows_by_why(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, page: Any
) -> None:
    """Payment and shipping listen elsewhere: two orders wait for payment (no progress); a third got a
    payment.authorized payment never made, inventory reserved for it (an anomaly). The page shows
    the two groups with their counts, what each waits for and since when."""
    async with contextlib.AsyncExitStack() as stack:
        urls = await stack.enter_async_context(
            some_participants(session_broker, prefix, tmp_path, ["order", "inventory"])
        )
        urls |= await stack.enter_async_context(
            some_participants(session_broker, f"{prefix}-elsewhere", tmp_path, ["payment", "shipping"])
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for wf in ("np-1", "np-2", "an-1"):
            await place(http, urls["order"], "happy", wf)
        forged = new_event(
            source="payment", name="authorized", subject="an-1", state="AUTHORIZED", version=1,
            domain={k: v for k, v in SAMPLES["happy"].body().items() if k != "order_id"},
        )  # fmt: skip
        await publish(session_broker.url, f"{prefix}/payment/authorized", [forged.to_json()])
        served = await stack.enter_async_context(serve_aggregator(urls, stall_after_ms=300))
        anomaly = await until_view(served.agg, "an-1", lambda v: v.stall is not None)
        await until_view(served.agg, "np-2", lambda v: v.stall is not None)
        assert anomaly.stall is not None and anomaly.stall.reason == "anomaly"

        await page.goto(f"{served.url}/ui/")
        await page.locator("#stalled-status", has_text="3 stalled workflows").wait_for()
        groups = page.locator("#stalled-list .stall-group")
        assert await groups.evaluate_all("(gs) => gs.map((g) => g.dataset.reason)") == [
            "no_progress",
            "anomaly",
        ]
        no_progress = page.get_by_role("region", name="No progress (2)")
        assert await table_ids(no_progress, "tbody tr") == ["np-1", "np-2"]
        assert set(await no_progress.locator("tbody td:nth-child(4)").all_inner_texts()) == {"payment"}
        for age in await no_progress.locator("tbody td:nth-child(5)").all_inner_texts():
            assert re.fullmatch(r"[0-9.]+ (ms|s) ago", age), age
        assert await no_progress.get_by_role("button", name="Redrive these 2").is_visible()
        anomalous = page.get_by_role("region", name="Anomaly (1)")
        assert await table_ids(anomalous, "tbody tr") == ["an-1"]
        assert await anomalous.locator("tbody td:nth-child(4)").inner_text() == "payment"
        assert await page.get_by_role("button", name="Redrive all 3 stalled").is_visible()
        assert "2 no progress, 1 anomaly" in await page.locator("#stalled-status").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-page-stall-groups.png"), full_page=True)


@pytest.mark.slow
async def test_page_redrives_a_stalled_group_as_a_job_with_live_progress_and_cancel(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, page: Any
) -> None:
    """Three orders the order service took alone stall for want of payment, then the others start.
    A dry run selects them and redrives nothing; a job at one redrive in five seconds is cancelled after its first (that one finishes); "redrive
    these" for the two left runs a job to done, and they finish too. All with the bearer token."""
    token = "page-test-token"
    stuck = ["rd-1", "rd-2", "rd-3"]
    async with contextlib.AsyncExitStack() as stack:
        urls = await stack.enter_async_context(some_participants(session_broker, prefix, tmp_path, ["order"]))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for wf in stuck:
            await place(http, urls["order"], "happy", wf)
        # The others start late (new sessions): order.created went nowhere.
        for name in ("payment", "inventory", "shipping"):
            urls |= await stack.enter_async_context(
                some_participants(session_broker, prefix, tmp_path, [name])
            )
        served = await stack.enter_async_context(serve_aggregator(urls, token=token, stall_after_ms=300))
        await until_view(served.agg, stuck[-1], lambda v: v.stall is not None)

        await page.goto(f"{served.url}/ui/")
        await page.locator("#stalled-status", has_text="needs a token").wait_for()
        await page.locator("#auth summary").click()
        await page.get_by_label("Bearer token").fill(token)
        await page.get_by_label("Bearer token").press("Tab")  # "change" fires
        group = page.get_by_role("region", name="No progress (3)")
        await group.wait_for()

        # A dry run selects the three and redrives nothing.
        await page.get_by_label("Dry run").check()
        await group.get_by_role("button", name="Redrive these 3").click()
        job = page.get_by_role("region", name=re.compile("^Redrive job"))
        status = job.get_by_role("status")
        await status.filter(has_text="Done: 3 of 3 done, 0 failed (3 selected); a dry run").wait_for()
        await page.get_by_label("Dry run").uncheck()
        group = page.get_by_role("region", name="No progress (3)")
        await group.wait_for()

        # A slow job, cancelled once it has redriven one workflow.
        await page.get_by_label("Redrives a second").fill("0.2")
        await group.get_by_role("button", name="Redrive these 3").click()
        await status.filter(has_text="Running: 1 of").wait_for()
        assert await page.get_by_role("button", name="Redrive all 3 stalled").is_disabled()
        await job.get_by_role("button", name="Cancel the job").click()
        await status.filter(has_text="Cancelled").wait_for()
        assert "1 republished" in await status.inner_text()
        assert await job.get_by_role("button", name="Cancel the job").is_hidden()
        first = await until_view(served.agg, stuck[0], lambda v: v.state == "COMPLETED")
        assert first.stall is None

        # The two left, at the default rate, to done.
        await page.get_by_role("button", name="Refresh the list").click()
        group = page.get_by_role("region", name="No progress (2)")
        await group.wait_for()
        assert await table_ids(group, "tbody tr") == stuck[1:]
        await page.get_by_label("Redrives a second").fill("20")
        await group.get_by_role("button", name="Redrive these 2").click()
        await status.filter(has_text="Done: 2 of 2 done, 0 failed (2 republished)").wait_for()
        assert await job.locator("progress").evaluate("(p) => [p.value, p.max]") == [2, 2]
        for wf in stuck[1:]:
            await until_view(served.agg, wf, lambda v: v.state == "COMPLETED")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "status-page-redrive-job.png"), full_page=True)
        await page.get_by_role("button", name="Refresh the list").click()
        await page.locator("#stalled-status", has_text="No stalled workflow").wait_for()
