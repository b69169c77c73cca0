"""The rest of the aggregator API: batch, the gateway sub-app, auth, metrics, OpenAPI, bad parameters."""

from __future__ import annotations

import pytest
from aiohttp import web

from aggregator import load_definition
from aggregator.web import create_app
from contract import serve_app
from order_saga import SAMPLES

from ..support import Saga, counts, foreign_server, gateway_example, serve_aggregator, status_body


async def test_batch_asks_each_participant_once_through_its_batch_endpoint(saga: Saga) -> None:
    """Three ids, one unknown: views for two, not_found for one, one batch call per participant."""
    a = await saga.place("happy")
    b = await saga.place("unshippable")
    await saga.wait_states(a, SAMPLES["happy"].parts)
    await saga.wait_states(b, SAMPLES["unshippable"].parts)
    before = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
    async with serve_aggregator(saga.urls) as served:
        async with saga.http.get(f"{served.url}/workflows?id={b}&id=nobody&id={a}") as r:
            assert r.status == 200
            body = await r.json()
    after = {n: await counts(saga.http, u) for n, u in saga.urls.items()}
    assert [v["workflow_id"] for v in body["views"]] == [b, a]
    assert [v["state"] for v in body["views"]] == ["COMPENSATED", "COMPLETED"]
    assert body["not_found"] == ["nobody"]
    for name in saga.urls:
        assert after[name]["batch_requests"] - before[name]["batch_requests"] == 1
        assert after[name]["status_requests"] == before[name]["status_requests"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?id=bad%20id",
        "?" + "&".join(f"id=w{i}" for i in range(101)),
        "?id=a&timeout_ms=0",
        "?id=a&ids=b",  # an unknown parameter: a typo is said, not ignored
        "?stalled=true&limt=5",
    ],
)
async def test_bad_batch_requests_are_400(saga: Saga, query: str) -> None:
    """No ids, invalid ids, more than 100 ids, a bad timeout, an unknown parameter: 400 problem+json."""
    async with serve_aggregator(saga.urls) as served, saga.http.get(f"{served.url}/workflows{query}") as r:
        assert r.status == 400
        assert r.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("query", "headers", "needle"),
    [
        ("?timeout_ms=abc", {}, "timeout_ms"),
        ("?timeout_ms=9999999", {}, "timeout_ms"),
        ("?min_version=payment", {}, "min_version"),
        ("?min_version=nobody:2", {}, "min_version"),
        ("?min_version=payment:-1", {}, "min_version"),
        ("", {"Cache-Control": "max-age=soon"}, "max-age"),
    ],
)
async def test_bad_read_parameters_are_400(
    saga: Saga, query: str, headers: dict[str, str], needle: str
) -> None:
    """Malformed timeout_ms, min_version or Cache-Control get a 400 that says which."""
    async with serve_aggregator(saga.urls) as served:
        async with saga.http.get(f"{served.url}/workflows/ord-1{query}", headers=headers) as r:
            assert r.status == 400
            assert needle in (await r.json())["detail"]


async def test_gateway_example_mounts_the_aggregator_beside_its_own_routes(saga: Saga) -> None:
    """examples/gateway.py: /hello is the gateway's, /status-api/workflows/{id} the aggregator's."""
    module = gateway_example()
    wf = await saga.place("declined")
    await saga.wait_states(wf, SAMPLES["declined"].parts)
    gateway = module.build_gateway(load_definition().with_urls(saga.urls))
    async with serve_app(gateway) as base:
        async with saga.http.get(f"{base}/hello") as r:
            assert await r.json() == {"gateway": "hello"}
        async with saga.http.get(f"{base}/status-api/workflows/{wf}") as r:
            assert r.status == 200
            assert (await r.json())["state"] == "FAILED"
        async with saga.http.get(f"{base}/status-api/readyz") as r:
            assert r.status == 200


async def test_inbound_bearer_token_is_required_when_configured(saga: Saga) -> None:
    """Without or with a wrong token: 401; with it: 200; health endpoints stay open."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with serve_aggregator(saga.urls, token="s3cret-token") as served:
        url = f"{served.url}/workflows/{wf}"
        async with saga.http.get(url) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "s3cret" not in await r.text()
        async with saga.http.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
        async with saga.http.get(url, headers={"Authorization": "Bearer s3cret-token"}) as r:
            assert r.status == 200
        # Two Authorization headers are refused, not one of them chosen (as the participants do).
        twice = [("Authorization", "Bearer s3cret-token"), ("Authorization", "Bearer s3cret-token")]
        async with saga.http.get(url, headers=twice) as r:
            assert r.status == 401
            assert (await r.json())["detail"].startswith("a valid bearer token is required")
        for open_path in ("/healthz", "/readyz"):
            async with saga.http.get(served.url + open_path) as r:
                assert r.status == 200
        async with saga.http.get(f"{served.url}/metrics") as r:
            assert r.status == 401
        for lookalike in ("/workflows/healthz", "/workflows/readyz", "/workflows/x/watch"):
            async with saga.http.get(served.url + lookalike) as r:
                assert r.status == 401, lookalike


async def test_auth_off_by_default(saga: Saga) -> None:
    """No token configured: no Authorization needed."""
    async with serve_aggregator(saga.urls) as served, saga.http.get(f"{served.url}/metrics") as r:
        assert r.status == 200


async def test_outbound_token_from_environment_is_sent_to_participants(
    saga: Saga, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A participant's token_env is read at start and sent as a bearer token."""
    seen: list[str] = []

    async def checking(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(status_body("ord-t", "AUTHORIZED", 1))

    monkeypatch.setenv("PAYMENT_TOKEN", "out-token")
    async with foreign_server(checking) as url:
        definition = load_definition().with_urls({**saga.urls, "payment": url})
        payment = definition.participants["payment"].model_copy(update={"token_env": "PAYMENT_TOKEN"})
        definition = definition.model_copy(
            update={"participants": {**definition.participants, "payment": payment}}
        )
        from aggregator import Aggregator

        async with Aggregator(definition) as agg:
            view = await agg.view("ord-t")
    assert view.parts["payment"].state == "AUTHORIZED"
    assert seen == ["Bearer out-token"]


async def test_metrics_report_calls_latency_breakers_cache_and_coalescing(saga: Saga) -> None:
    """/metrics is Prometheus text with the per-participant series."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with serve_aggregator(saga.urls) as served:
        async with saga.http.get(f"{served.url}/workflows/{wf}") as r:
            assert r.status == 200
        async with saga.http.get(f"{served.url}/metrics") as r:
            assert r.content_type == "text/plain"
            text = await r.text()
    for series in (
        'aggregator_participant_calls_total{outcome="ok",participant="payment"} 1.0',
        'aggregator_participant_latency_seconds_count{participant="order"} 1.0',
        'aggregator_breaker_state{participant="shipping"} 0.0',
        'aggregator_cache_lookups_total{participant="inventory",result="miss"} 1.0',
        'aggregator_views_total{status="200"} 1.0',
        "aggregator_coalesced_total",
        "aggregator_hedges_total",
    ):
        assert series in text, series


async def test_openapi_describes_the_served_paths(saga: Saga) -> None:
    """/openapi.json lists every route the app really serves, and the view's required fields."""
    async with serve_aggregator(saga.urls) as served, saga.http.get(f"{served.url}/openapi.json") as r:
        doc = await r.json()
    served_paths = {
        res.get_info().get("formatter") or res.get_info().get("path")
        for res in create_app(served.agg).router.resources()
    }
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == served_paths
    required = set(doc["components"]["schemas"]["View"]["required"])
    assert required == {
        "workflow_id",
        "workflow",
        "state",
        "step",
        "complete",
        "parts",
        "staleness_ms",
        "anomalies",
        "generated_at",
        "stalled",
        "stall",
    }
