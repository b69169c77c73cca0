"""Defects found by probing the aggregator from outside, each with the behaviour now expected.

Real participants, real servers on port 0, a real broker; fake participants only where the
defect is about how a participant answers (in pieces, slowly).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from aggregator import Aggregator, DefinitionError, InvalidWorkflowId, load_definition
from aggregator.definition import parse_definition
from contract import new_event
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import (
    Saga,
    counts,
    events_aggregator,
    foreign_server,
    publish,
    serve_aggregator,
    status_body,
    until,
)


async def test_an_answer_written_in_pieces_is_read_whole() -> None:
    """A status body sent in two writes 30 ms apart, and a 200 KB one, are parsed, not bad_response."""

    async def slow_pieces(request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["tail"].rpartition("/")[2]
        name = request.query.get("as", "payment")
        body = status_body(workflow_id, "AUTHORIZED", 3, participant=name)
        if workflow_id == "big":
            body["data"] = {"blob": "x" * 200_000}
        raw = json.dumps(body).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(raw)
        await response.prepare(request)
        half = len(raw) // 2
        await response.write(raw[:half])
        await asyncio.sleep(0.03)
        await response.write(raw[half:])
        await response.write_eof()
        return response

    async with foreign_server(slow_pieces) as fake:
        urls = {"payment": fake}
        definition = load_definition()
        definition = definition.model_copy(
            update={"participants": {"payment": definition.participants["payment"]}, "orderings": []}
        ).with_urls(urls)
        async with Aggregator(definition) as agg:
            for workflow_id in ("pieces", "big"):
                view = await agg.view(workflow_id)
                part = view.parts["payment"]
                assert (part.state, part.version, part.error) == ("AUTHORIZED", 3, None)
            assert (
                agg.metrics.value("aggregator_participant_calls_total", participant="payment", outcome="ok")
                == 2
            )


@pytest.mark.slow
async def test_a_forged_event_is_overruled_by_the_participant(
    saga: Saga, session_broker: MosquittoBroker, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """payment.refunded at version 999999 on the broker: a no-cache read shows the participant's v1."""
    wf = await saga.place("declined")
    await saga.wait_states(wf, SAMPLES["declined"].parts)
    truth = await saga.status("payment", wf)
    assert truth is not None
    async with events_aggregator(saga, session_broker, prefix) as agg:
        forged = new_event(source="payment", name="refunded", subject=wf, state="REFUNDED", version=999999)
        await publish(session_broker.url, f"{prefix}/payment/refunded", [forged.to_json()])
        await until(lambda: (p := agg.store.get("payment", wf)) is not None and p.version == 999999)
        with caplog.at_level(logging.WARNING, logger="aggregator"):
            async with (
                serve_app_for(agg) as url,
                saga.http.get(f"{url}/workflows/{wf}", headers={"Cache-Control": "no-cache"}) as r,
            ):
                view = await r.json()
        assert view["parts"]["payment"]["version"] == truth["version"]
        assert view["parts"]["payment"]["state"] == truth["state"] == "DECLINED"
        assert view["parts"]["payment"]["source"] == "live"
        assert agg.metrics.value("aggregator_events_contradicted_total", participant="payment") == 1
        kept = agg.store.get("payment", wf)
        assert kept is not None and kept.version == truth["version"]
    assert any("999999" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def serve_app_for(agg: Aggregator) -> Any:
    """Serve ``agg``'s HTTP API on port 0 (the aggregator stays open by its owner)."""
    from aggregator.web import create_app
    from contract import serve_app

    return serve_app(create_app(agg))


async def test_a_configured_but_empty_token_is_an_error_not_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """``token_env`` naming an unset or empty variable, or ``token = ""``, refuses to start."""
    base = load_definition()
    text = 'name = "x"\n[participants.a]\nurl = "http://127.0.0.1:1"\n[[rules]]\nstate = "S"\n'
    monkeypatch.delenv("AGG_TEST_TOKEN", raising=False)
    unset = parse_definition(text + '[auth]\ntoken_env = "AGG_TEST_TOKEN"\n')
    with pytest.raises(DefinitionError, match=r"AGG_TEST_TOKEN, which is not set"):
        Aggregator(unset)
    monkeypatch.setenv("AGG_TEST_TOKEN", "  ")
    with pytest.raises(DefinitionError, match=r"AGG_TEST_TOKEN, which is empty"):
        Aggregator(unset)
    with pytest.raises(DefinitionError, match=r"auth\.token"):
        parse_definition(text + '[auth]\ntoken = ""\n')
    monkeypatch.setenv("AGG_TEST_TOKEN", "s3cret")
    assert unset.credentials()[0] == "s3cret"
    assert base.credentials() == (None, dict.fromkeys(base.participants))


async def test_credentials_in_a_participant_url_are_refused_without_echoing_them() -> None:
    """``http://user:pass@host`` is a clear definition error that never shows the password."""
    with pytest.raises(DefinitionError) as caught:
        load_definition().with_urls({"payment": "http://user:hunter2@127.0.0.1:8002"})
    assert "token" in str(caught.value)
    text = 'name = "x"\n[participants.a]\nurl = "http://u:hunter2@127.0.0.1:1"\n[[rules]]\nstate = "S"\n'
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text)
    assert "credentials in the URL are not supported" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_undecodable_authorization_and_odd_digits_are_4xx_not_500(saga: Saga) -> None:
    """Invalid UTF-8 in Authorization is a 401; ``timeout_ms=²`` and Arabic-Indic digits are 400."""
    async with serve_aggregator(saga.urls, token="right") as served:
        host, port = served.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /workflows/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \xff\xfe\xc3\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert b"application/problem+json" in answer
        for value in ("%C2%B2", "%D9%A1%D9%A0%D9%A0"):
            async with saga.http.get(
                f"{served.url}/workflows/x?timeout_ms={value}", headers={"Authorization": "Bearer right"}
            ) as r:
                assert r.status == 400
                assert "timeout_ms" in (await r.json())["detail"]


@pytest.mark.parametrize("dots", [".", ".."])
async def test_dot_segment_ids_are_refused_everywhere(saga: Saga, dots: str) -> None:
    """``.`` and ``..`` are not workflow ids: 400 from the aggregator, refused by the library."""
    encoded = dots.replace(".", "%2E")  # sent as is: a client would otherwise drop the segment

    def exact(url: str) -> URL:
        return URL(url, encoded=True)

    async with serve_aggregator(saga.urls) as served:
        with pytest.raises(InvalidWorkflowId):
            await served.agg.view(dots)
        async with saga.http.get(exact(f"{served.url}/workflows/{encoded}")) as r:
            assert r.status == 400
            assert "'.' or '..'" in (await r.json())["detail"]
        async with saga.http.get(exact(f"{served.url}/workflows?id={encoded}")) as r:
            assert r.status == 400
    async with saga.http.get(exact(f"{saga.urls['payment']}/status/{encoded}")) as r:
        assert r.status == 400


async def test_the_documented_batch_maximum_is_reachable(saga: Saga) -> None:
    """100 ids of 128 characters (a 13 KB request line) are answered, not refused by the parser."""
    wf = await saga.place("happy", order_id="b" * 128)
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    ids = [wf] + [f"{i:03d}" + "x" * 125 for i in range(99)]
    async with serve_aggregator(saga.urls) as served:
        query = "&".join(f"id={i}" for i in ids)
        async with saga.http.get(f"{served.url}/workflows?{query}") as r:
            assert r.status == 200, await r.text()
            body = await r.json()
    assert [v["workflow_id"] for v in body["views"]] == [wf]
    assert body["views"][0]["state"] == "COMPLETED"
    assert len(body["not_found"]) == 99


async def test_the_watch_limit_is_decided_before_200_and_a_closed_stream_frees_its_slot(saga: Saga) -> None:
    """25 streams at max_watchers=20: 20 answered 200, 5 answered 503; closing one frees its slot at once."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with serve_aggregator(saga.urls, max_watchers=20) as served:
        sessions = [aiohttp.ClientSession() for _ in range(25)]
        try:
            responses = await asyncio.gather(*(s.get(f"{served.url}/workflows/{wf}/watch") for s in sessions))
            statuses = sorted(r.status for r in responses)
            assert statuses == [200] * 20 + [503] * 5
            assert all(r.content_type == "application/problem+json" for r in responses if r.status == 503)
            assert served.agg.watchers.count == 20
            open_ = [r for r in responses if r.status == 200]
            open_[0].close()
            await _until_async(lambda: served.agg.watchers.count == 19, timeout=1.5)
            async with aiohttp.ClientSession() as extra, extra.get(f"{served.url}/workflows/{wf}/watch") as r:
                assert r.status == 200
        finally:
            for response in responses:
                response.close()
            for session in sessions:
                await session.close()


async def _until_async(predicate: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_an_unmet_min_version_is_reported(saga: Saga) -> None:
    """``min_version=order:3`` on a workflow whose order part stays at v2: 200, not complete, says which."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    order = await saga.status("order", wf)
    assert order is not None
    wanted = order["version"] + 1
    async with serve_aggregator(saga.urls) as served:
        async with saga.http.get(
            f"{served.url}/workflows/{wf}?min_version=order:{wanted}&timeout_ms=300"
        ) as r:
            unmet = await r.json()
        async with saga.http.get(f"{served.url}/workflows/{wf}?min_version=order:{order['version']}") as r:
            met = await r.json()
    assert r.status == 200
    assert unmet["complete"] is False
    assert unmet["min_version_unmet"] == {"order": wanted}
    assert unmet["state"] == "COMPLETED"
    assert met["complete"] is True
    assert "min_version_unmet" not in met


@pytest.mark.slow
async def test_an_idle_watch_on_an_unknown_id_backs_off(saga: Saga) -> None:
    """With polls every 100 ms, an unknown id is polled at 0.1, 0.3, 0.7, 1.5 s: not 16 times in 1.6 s."""
    async with serve_aggregator(saga.urls, watch_poll_ms=100) as served:
        before = await counts(saga.http, saga.urls["payment"])
        async with saga.http.get(f"{served.url}/workflows/nobody-yet/watch") as r:
            assert r.status == 200
            await asyncio.sleep(1.6)
            after = await counts(saga.http, saga.urls["payment"])
    polls = after["status_requests"] - before["status_requests"]
    assert 3 <= polls <= 5  # the first read, then backed-off polls


async def test_readyz_says_in_words_which_participants_fail(
    saga: Saga, caplog: pytest.LogCaptureFixture
) -> None:
    """Every participant down: /readyz is ``degraded`` naming it, and a warning is logged once."""
    dead = {name: "http://127.0.0.1:9" for name in saga.urls}
    with caplog.at_level(logging.WARNING, logger="aggregator"):
        async with serve_aggregator(dead, breaker_failures=1) as served:
            async with saga.http.get(f"{served.url}/readyz") as r:
                fine = await r.json()
            async with saga.http.get(f"{served.url}/workflows/x") as r:
                assert r.status == 503
            async with saga.http.get(f"{served.url}/readyz") as r:
                failing = await r.json()
    assert fine["status"] == "ready"
    assert set(fine["participants"].values()) == {"unknown"}  # not asked yet
    assert failing["status"] == "degraded"
    assert set(failing["participants"].values()) == {"failing"}
    assert "every participant is failing" in failing["detail"]
    every = [rec for rec in caplog.records if "every participant is failing" in rec.getMessage()]
    assert len(every) == 1


def test_a_misspelled_state_in_a_rule_is_refused() -> None:
    """Participants declare their states; a rule naming CONFIMRED does not load."""
    text = load_definition_text().replace('when = { order = "CONFIRMED" }', 'when = { order = "CONFIMRED" }')
    with pytest.raises(DefinitionError, match="CONFIMRED"):
        parse_definition(text)
    ordering = (
        load_definition_text()
        + '\n[[orderings]]\npart = "shipping:SHIPPED"\nrequires = "payment:AUTHORIZED"\n'
    )
    with pytest.raises(DefinitionError, match="SHIPPED"):
        parse_definition(ordering)


def load_definition_text() -> str:
    from importlib import resources

    return resources.files("aggregator").joinpath("order_saga.toml").read_text("utf-8")


async def test_openapi_says_what_the_server_enforces(saga: Saga) -> None:
    """With auth on, every route but the probes declares the bearer scheme and its 401."""
    async with serve_aggregator(saga.urls, token="t") as served:
        async with saga.http.get(f"{served.url}/openapi.json", headers={"Authorization": "Bearer t"}) as r:
            doc = await r.json()
        async with saga.http.get(f"{served.url}/openapi.json") as r:
            assert r.status == 401
        async with saga.http.get(f"{served.url}/metrics") as r:
            assert r.status == 401
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path in ("/healthz", "/readyz", "/ui", "/ui/", "/ui/{name}"):  # the page loads, then asks
                assert "security" not in op
            else:
                assert op["security"] == [{"bearer": []}], (method, path)
                assert "401" in op["responses"], (method, path)
    one, batch = doc["paths"]["/workflows"]["get"]["parameters"][0]["schema"]["oneOf"][0]["properties"]["id"][
        "anyOf"
    ]
    assert batch["maxItems"] == 100
    pattern = doc["paths"]["/workflows/{workflow_id}"]["get"]["parameters"][0]["schema"]["pattern"]
    assert batch["items"]["pattern"] == one["pattern"] == pattern


async def test_a_request_the_parser_refuses_is_one_warning_not_a_traceback(
    saga: Saga, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad bytes in the query: 400, logged as one WARNING line without a traceback."""
    async with serve_aggregator(saga.urls) as served:
        host, port = served.url.removeprefix("http://").split(":")
        with caplog.at_level(logging.INFO):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /workflows/a?timeout_ms=\xd9\xa1 HTTP/1.1\r\nHost: a\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
            writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    refused = [r for r in caplog.records if r.name == "contract.http"]
    assert [(r.levelname, r.exc_info) for r in refused] == [("WARNING", None)]
    assert "Invalid char in url query" in refused[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
