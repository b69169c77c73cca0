"""Failures degrade the view as the contract says: 200 with errors, 503 only with nothing known."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker, free_port

from ..support import Saga, foreign_server, process_saga, serve_aggregator, status_body


async def test_participant_down_gives_200_incomplete_with_its_error(saga: Saga) -> None:
    """A refused connection marks that part unavailable; the others are served live."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    urls = {**saga.urls, "inventory": f"http://127.0.0.1:{free_port()}"}
    async with serve_aggregator(urls) as served, saga.http.get(f"{served.url}/workflows/{wf}") as r:
        assert r.status == 200
        view = await r.json()
    assert view["complete"] is False
    assert view["parts"]["inventory"] == {
        "state": None, "version": None, "updated_at": None, "observed_at": None,
        "source": "none", "latency_ms": None, "error": "unavailable",
    }  # fmt: skip
    assert view["parts"]["order"]["state"] == "CONFIRMED"
    assert view["state"] == "COMPLETED"


@pytest.mark.slow
async def test_sigkilled_participant_process_is_unavailable_within_deadline(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Real processes through the participants CLI; after SIGKILL of shipping the view still answers."""
    async with process_saga(session_broker.url, prefix, tmp_path) as (saga, procs):
        wf = await saga.place("happy")
        await saga.wait_states(wf, SAMPLES["happy"].parts)
        procs["shipping"].kill()
        async with serve_aggregator(saga.urls, deadline_ms=1000) as served:
            started = time.perf_counter()
            view = await served.agg.view(wf)
            elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert view.complete is False
    assert view.parts["shipping"].error == "unavailable"
    assert view.parts["payment"].state == "AUTHORIZED"


async def test_all_participants_down_and_nothing_cached_is_503() -> None:
    """No answer from anyone and nothing remembered: 503 problem+json naming each error."""
    import aiohttp

    urls = {n: f"http://127.0.0.1:{free_port()}" for n in ("order", "payment", "inventory", "shipping")}
    async with serve_aggregator(urls) as served, aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/workflows/ord-1") as r:
            assert r.status == 503
            assert r.content_type == "application/problem+json"
            body = await r.json()
    assert body["errors"] == dict.fromkeys(urls, "unavailable")


def _misbehaving(kind: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        workflow_id = request.path.rsplit("/", 1)[-1]
        if kind == "garbage":
            return web.Response(text="<html>surprise</html>", content_type="text/html")
        if kind == "wrong_shape":
            return web.json_response({"state": 3, "version": "two"})
        if kind == "other_workflow":
            return web.json_response(status_body("someone-else", "AUTHORIZED", 1))
        if kind == "huge":
            return web.json_response(
                {**status_body(workflow_id, "AUTHORIZED", 1), "data": {"pad": "x" * 2_000_000}}
            )
        if kind == "slow":
            await asyncio.sleep(2)
            return web.json_response(status_body(workflow_id, "AUTHORIZED", 1))
        if kind == "teapot":
            return web.Response(status=418, text="no")
        raise AssertionError(kind)

    return handler


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("garbage", "bad_response"),
        ("wrong_shape", "bad_response"),
        ("other_workflow", "bad_response"),
        ("huge", "bad_response"),
        ("teapot", "bad_response"),
        ("slow", "timeout"),
    ],
)
@pytest.mark.slow
async def test_misbehaving_participant_gets_its_error_and_others_are_unaffected(
    saga: Saga, kind: str, error: str
) -> None:
    """Garbage, oversized, foreign, non-JSON or too-slow answers are that part's error, never a 500."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with foreign_server(_misbehaving(kind)) as bad:
        urls = {**saga.urls, "payment": bad}
        async with serve_aggregator(urls) as served:
            started = time.perf_counter()
            async with saga.http.get(f"{served.url}/workflows/{wf}?timeout_ms=500") as r:
                assert r.status == 200
                view = await r.json()
            elapsed = time.perf_counter() - started
    assert view["parts"]["payment"]["error"] == error
    assert view["parts"]["payment"]["state"] is None
    assert view["complete"] is False
    assert {n: view["parts"][n]["state"] for n in ("order", "inventory", "shipping")} == {
        "order": "CONFIRMED", "inventory": "RESERVED", "shipping": "SCHEDULED",
    }  # fmt: skip
    assert elapsed < 1.5


async def test_request_deadline_returns_what_arrived(saga: Saga) -> None:
    """?timeout_ms=100 with one 2 s participant returns at about 100 ms with that part timed out."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with (
        foreign_server(_misbehaving("slow")) as slow,
        serve_aggregator({**saga.urls, "shipping": slow}) as served,
    ):
        started = time.perf_counter()
        async with saga.http.get(f"{served.url}/workflows/{wf}?timeout_ms=100") as r:
            view = await r.json()
        elapsed = time.perf_counter() - started
    assert view["parts"]["shipping"]["error"] == "timeout"
    assert view["parts"]["order"]["state"] == "CONFIRMED"
    assert 0.09 <= elapsed < 1.0


async def test_participant_answering_503_is_unavailable(saga: Saga) -> None:
    """A participant's own 503 (here: --error-rate style) is unavailable, not bad_response."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=503, body=json.dumps({"status": 503}).encode(), content_type="application/problem+json"
        )

    wf = await saga.place("declined")
    await saga.wait_states(wf, SAMPLES["declined"].parts)
    async with (
        foreign_server(handler) as failing,
        serve_aggregator({**saga.urls, "order": failing}) as served,
    ):
        view = await served.agg.view(wf)
    assert view.parts["order"].error == "unavailable"
    assert view.parts["payment"].state == "DECLINED"
