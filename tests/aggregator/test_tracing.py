"""Tracing with OpenTelemetry: one saga is one trace across the four services, and a view spans its calls.

The services run in-process here, so one in-memory exporter sees every span; the trace crosses
them the way it crosses processes: through each event's ``traceparent`` on the broker and each
call's ``traceparent`` header.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contract import tracing
from order_saga import SAMPLES
from order_saga.broker import MosquittoBroker

from ..support import Saga, process_saga, serve_aggregator

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra (in dev) brings the SDK")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def _tree(trace: list[Any]) -> dict[int, Any]:
    """The trace's spans by id, after checking they form one tree (one root, every parent in it)."""
    by_id = {s.context.span_id: s for s in trace}
    roots = [s for s in trace if s.parent is None]
    assert len(roots) == 1, [s.name for s in roots]
    assert all(s.parent.span_id in by_id for s in trace if s.parent is not None)
    return by_id


async def test_one_saga_is_one_trace_across_every_service(spans: InMemorySpanExporter, saga: Saga) -> None:
    # ``spans`` first: tracing must be on when the participants build their apps.
    wf = await saga.place("unshippable")
    await saga.wait_states(wf, SAMPLES["unshippable"].parts)
    finished = spans.get_finished_spans()
    (post,) = [s for s in finished if s.name == "POST /orders"]
    assert post.kind == SpanKind.SERVER and post.parent is None
    trace = [s for s in finished if s.context.trace_id == post.context.trace_id]
    by_id = _tree(trace)
    handled = [s for s in trace if s.kind == SpanKind.CONSUMER]
    # Every event a participant applied for this saga is a span of this one trace, and no other.
    assert len(handled) == sum(SAMPLES["unshippable"].applied.values())
    assert {s.attributes["saga.workflow_id"] for s in handled} == {wf}
    assert all(
        s.attributes["saga.workflow_id"] != wf
        for s in finished
        if s.kind == SpanKind.CONSUMER and s not in handled
    )
    # The causal chain: payment handled order.created, a child of the POST; inventory handled
    # payment.authorized, a child of the payment's span; and so on.
    first = {s.attributes["saga.event"]: s for s in handled}
    assert first["order.created"].parent.span_id == post.context.span_id
    assert first["order.created"].attributes["saga.participant"] == "payment"
    assert by_id[first["payment.authorized"].parent.span_id].attributes["saga.event"] == "order.created"
    assert by_id[first["inventory.reserved"].parent.span_id].attributes["saga.event"] == "payment.authorized"
    assert by_id[first["shipping.failed"].parent.span_id].attributes["saga.event"] == "inventory.reserved"
    assert {s.attributes["saga.participant"] for s in handled} == {"order", "payment", "inventory"} | {
        "shipping"
    }


async def test_a_view_is_a_server_span_whose_participant_calls_are_its_children(
    spans: InMemorySpanExporter, saga: Saga
) -> None:
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    async with serve_aggregator(saga.urls) as served, saga.http.get(f"{served.url}/workflows/{wf}") as r:
        assert r.status == 200
    finished = spans.get_finished_spans()
    (view,) = [s for s in finished if s.name == "GET /workflows/{workflow_id}"]
    trace = [s for s in finished if s.context.trace_id == view.context.trace_id]
    by_id = _tree(trace)
    calls = [s for s in trace if s.kind == SpanKind.CLIENT]
    assert sorted(s.attributes["saga.participant"] for s in calls) == sorted(saga.urls)
    assert all(s.parent.span_id == view.context.span_id for s in calls)
    # Each participant's server span continues its call's traceparent.
    served_spans = [s for s in trace if s.kind == SpanKind.SERVER and s is not view]
    assert len(served_spans) == len(calls)
    assert {by_id[s.parent.span_id].attributes["saga.participant"] for s in served_spans} == set(saga.urls)
    assert all(s.name == "GET /status/{workflow_id}" for s in served_spans)


def test_tracing_is_off_unless_the_environment_asks_and_says_clearly_what_is_wrong() -> None:
    tracing.configure_from_env("x", environ={})
    assert not tracing.enabled()
    tracing.configure_from_env("x", environ={"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled()
    assert tracing.current_traceparent() is None
    assert tracing.server_middlewares() == []  # an app built now pays nothing per request
    with pytest.raises(tracing.ConfigError, match="unknown exporter"):
        tracing.configure_from_env("x", environ={"OTEL_TRACES_EXPORTER": "zipkin"})
    tracing.configure_from_env("x", environ={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "svc"})
    try:
        assert tracing.enabled()
        assert len(tracing.server_middlewares()) == 1
        with tracing.span("probe"):
            parent = tracing.current_traceparent()
        assert parent is not None and parent.startswith("00-") and len(parent) == 55
    finally:
        tracing.shutdown()
    assert not tracing.enabled()


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The spans a ConsoleSpanExporter printed (indented JSON objects) among a process's log lines."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (at := text.find('{\n    "name"', at)) >= 0:
        span, end = decoder.raw_decode(text, at)
        found.append(span)
        at = end
    return found


@pytest.mark.slow
async def test_one_saga_is_one_trace_across_real_processes(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four participant processes exporting to their console: the saga's spans, gathered from all
    four, share one trace id and form one tree, each process contributing its part."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    async with process_saga(session_broker.url, prefix, tmp_path) as (saga, procs):
        wf = await saga.place("happy")
        await saga.wait_states(wf, SAMPLES["happy"].parts)
        for proc in procs.values():
            proc.stop()  # SIGTERM: the batch exporter flushes on the way out
    spans = {name: _console_spans(proc.log.read_text()) for name, proc in procs.items()}
    (post,) = [s for s in spans["order"] if s["name"] == "POST /orders"]
    trace_id = post["context"]["trace_id"]
    trace = [s for found in spans.values() for s in found if s["context"]["trace_id"] == trace_id]
    ids = {s["context"]["span_id"] for s in trace}
    roots = [s for s in trace if s["parent_id"] is None]
    assert roots == [post]
    assert all(s["parent_id"] in ids for s in trace if s["parent_id"] is not None)
    handled = {
        (s["resource"]["attributes"]["service.name"], s["attributes"]["saga.event"])
        for s in trace
        if s["kind"] == "SpanKind.CONSUMER"
    }
    assert handled == {
        ("payment", "order.created"),
        ("inventory", "payment.authorized"),
        ("shipping", "inventory.reserved"),
        ("order", "shipping.scheduled"),
    }
