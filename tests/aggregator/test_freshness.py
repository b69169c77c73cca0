"""Monotonic reads, read-your-writes, TTL caching with Cache-Control, stale-if-error, ETag/304."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from aggregator import ReadOptions
from order_saga import SAMPLES

from ..support import Saga, counts, foreign_server, order_body, serve_aggregator, status_body


async def test_older_answer_arriving_after_newer_never_moves_a_part_back(saga: Saga) -> None:
    """A lagging answer (version 1 after version 2) is not served: the part stays at version 2."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    answers = iter([("REFUNDED", 2), ("AUTHORIZED", 1), ("AUTHORIZED", 1)])

    async def lagging(request: web.Request) -> web.StreamResponse:
        state, version = next(answers)
        return web.json_response(status_body(wf, state, version))

    async with foreign_server(lagging) as url, serve_aggregator({**saga.urls, "payment": url}) as served:
        first = await served.agg.view(wf)
        await asyncio.sleep(0.1)
        second = await served.agg.view(wf)
        third = await served.agg.view(wf, ReadOptions(no_cache=True))
    assert (first.parts["payment"].version, first.parts["payment"].source) == (2, "live")
    assert (second.parts["payment"].state, second.parts["payment"].version) == ("REFUNDED", 2)
    assert second.parts["payment"].source == "cache"
    assert third.parts["payment"].version == 2
    # Staleness is honest: the version-2 part served second was observed by the first read,
    # at least 100 ms before, although the second read got an answer (version 1) just now.
    assert second.staleness_ms >= 100
    assert second.parts["payment"].observed == first.parts["payment"].observed


async def test_slow_old_answer_landing_after_a_fast_new_one_does_not_win(saga: Saga) -> None:
    """A batch call answering version 1 late, after a single read got version 2, serves version 2."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)

    async def racing(request: web.Request) -> web.StreamResponse:
        if request.path == "/status":  # the batch endpoint: slow, and behind
            await asyncio.sleep(0.2)
            return web.json_response({"statuses": [status_body(wf, "AUTHORIZED", 1)], "missing": []})
        return web.json_response(status_body(wf, "REFUNDED", 2))

    async with foreign_server(racing) as url, serve_aggregator({**saga.urls, "payment": url}) as served:
        batch = asyncio.create_task(served.agg.views([wf]))
        await asyncio.sleep(0.05)
        single = await served.agg.view(wf)
        (late,), not_found = await batch
    assert not_found == []
    assert (single.parts["payment"].version, single.parts["payment"].source) == (2, "live")
    assert (late.parts["payment"].state, late.parts["payment"].version) == ("REFUNDED", 2)
    assert late.parts["payment"].source == "cache"


async def test_min_version_waits_for_the_write_to_become_visible(saga: Saga) -> None:
    """Right after POST /orders, ?min_version=order:2 returns the confirmed order."""
    async with serve_aggregator(saga.urls) as served:
        async with saga.http.post(f"{saga.urls['order']}/orders", json=order_body("happy")) as r:
            wf = (await r.json())["workflow_id"]
        async with saga.http.get(
            f"{served.url}/workflows/{wf}?min_version=order:2&min_version=shipping:1"
        ) as r:
            assert r.status == 200
            view = await r.json()
    assert view["parts"]["order"]["state"] == "CONFIRMED"
    assert view["parts"]["order"]["version"] == 2
    assert view["state"] == "COMPLETED"


async def test_min_version_never_reached_returns_at_the_deadline(saga: Saga) -> None:
    """A version that never comes: the view returns at the deadline with what there is."""
    wf = await saga.place("declined")
    await saga.wait_states(wf, SAMPLES["declined"].parts)
    async with serve_aggregator(saga.urls) as served:
        started = time.perf_counter()
        async with saga.http.get(f"{served.url}/workflows/{wf}?min_version=payment:9&timeout_ms=300") as r:
            view = await r.json()
        elapsed = time.perf_counter() - started
    assert 0.29 <= elapsed < 1.0
    assert view["parts"]["payment"]["version"] == 1
    assert view["state"] == "FAILED"


async def test_ttl_mode_serves_cached_parts_without_calling_participants(saga: Saga) -> None:
    """Within the TTL a second read is all cache; no-cache and max-age=0 go back to the participants."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with serve_aggregator(saga.urls, freshness="ttl", ttl_ms=60_000) as served:
        url = f"{served.url}/workflows/{wf}"
        async with saga.http.get(url) as r:
            first = await r.json()
        before = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
        async with saga.http.get(url) as r:
            cached = await r.json()
        middle = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
        async with saga.http.get(url, headers={"Cache-Control": "no-cache"}) as r:
            refetched = await r.json()
        async with saga.http.get(url, headers={"Cache-Control": "max-age=0"}) as r:
            max_age_zero = await r.json()
        after = (await counts(saga.http, saga.urls["payment"]))["status_requests"]
    assert {p["source"] for p in first["parts"].values()} == {"live"}
    assert {p["source"] for p in cached["parts"].values()} == {"cache"}
    assert middle == before
    assert {p["source"] for p in refetched["parts"].values()} == {"live"}
    assert {p["source"] for p in max_age_zero["parts"].values()} == {"live"}
    assert after == before + 2
    assert cached["staleness_ms"] >= first["staleness_ms"]


async def test_stale_if_error_serves_the_last_part_marked_stale(saga: Saga) -> None:
    """TTL expired and the participant fails: the last known part is served as stale, with the error."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    up = {"on": True}

    async def failing_later(request: web.Request) -> web.StreamResponse:
        if up["on"]:
            return web.json_response(status_body(wf, "AUTHORIZED", 1))
        return web.Response(status=503)

    async with foreign_server(failing_later) as url:
        async with serve_aggregator(
            {**saga.urls, "payment": url}, freshness="ttl", ttl_ms=50, stale_while_revalidate_ms=0
        ) as served:
            await served.agg.view(wf)
            up["on"] = False
            await asyncio.sleep(0.1)
            view = await served.agg.view(wf)
    part = view.parts["payment"]
    assert (part.state, part.source, part.error) == ("AUTHORIZED", "stale", "unavailable")
    assert view.complete is False
    assert view.staleness_ms >= 100


async def test_etag_revalidation_gives_304_until_a_part_changes(saga: Saga) -> None:
    """The same parts give the same ETag (304 on If-None-Match); one part's new version changes it."""
    wf = await saga.place("happy", order_id="etag-1")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    payment = {"state": "AUTHORIZED", "version": 1}

    async def controlled(request: web.Request) -> web.StreamResponse:
        return web.json_response(status_body(wf, payment["state"], payment["version"]))

    async with foreign_server(controlled) as fake, serve_aggregator({**saga.urls, "payment": fake}) as served:
        url = f"{served.url}/workflows/{wf}"
        async with saga.http.get(url) as r:
            etag = r.headers["ETag"]
            assert "no-cache" in r.headers["Cache-Control"]
        async with saga.http.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304  # every participant asked again, nothing changed
            assert r.headers["ETag"] == etag
            assert await r.read() == b""
        async with saga.http.get(url, headers={"If-None-Match": '"something-else"'}) as r:
            assert r.status == 200
            assert r.headers["ETag"] == etag
        payment.update(state="REFUNDED", version=2)
        async with saga.http.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 200
            changed = r.headers["ETag"]
            assert (await r.json())["parts"]["payment"]["version"] == 2
        async with saga.http.get(url, headers={"If-None-Match": changed}) as r:
            assert r.status == 304
    assert changed != etag
