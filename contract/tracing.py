"""Tracing with OpenTelemetry: optional (the ``otel`` extra), off by default, no cost when off.

One saga is one trace: ``POST /orders`` starts it; every event carries the W3C
``traceparent`` of the span that produced it (the CloudEvents distributed-tracing extension);
a participant handles an event in a consumer span whose parent is that ``traceparent``; the
aggregator's view is a server span whose participant calls are client spans, each sending its
``traceparent`` header, and the participants' HTTP servers continue it.

Turned on by the standard environment: ``OTEL_TRACES_EXPORTER`` ``console`` and/or ``otlp``
(the OTLP/HTTP exporter, itself configured by ``OTEL_EXPORTER_OTLP_ENDPOINT`` and friends),
``OTEL_SERVICE_NAME`` to override the service's name. Unset or ``none``: off, and nothing of
OpenTelemetry is even imported. Tests and embedders may pass a provider of their own to
:func:`use` (for instance with the SDK's in-memory exporter).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from .errors import ConfigError

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None
_propagator: Any = None
_OFF = contextlib.nullcontext()


def enabled() -> bool:
    """Whether spans are being recorded."""
    return _tracer is not None


def configure_from_env(service: str, environ: Mapping[str, str] | None = None) -> None:
    """Turn tracing on as ``OTEL_TRACES_EXPORTER`` says (``console``, ``otlp``, both comma-separated);
    :class:`ConfigError` if it names an unknown exporter or the ``otel`` extra is missing."""
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names or names == ["none"]:
        return
    unknown = sorted(set(names) - {"console", "otlp"})
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter(s) {', '.join(unknown)} (console, otlp or none)"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError(
            "OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: pip install 'saga-aggregator[otel]'"
        ) from None
    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service)})
    )
    for name in names:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError(
                    "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: "
                    "pip install 'saga-aggregator[otel]'"
                ) from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)


def use(provider: Any) -> None:
    """Record spans with ``provider`` (an OpenTelemetry ``TracerProvider``); ``None`` turns tracing off."""
    global _tracer, _provider, _propagator
    if provider is None:
        _tracer = _provider = _propagator = None
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _provider = provider
    _propagator = TraceContextTextMapPropagator()
    _tracer = provider.get_tracer("saga-aggregator")


def shutdown() -> None:
    """Flush and stop the provider :func:`configure_from_env` made (at a process's end)."""
    provider = _provider
    use(None)
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()


def span(
    name: str,
    *,
    kind: str = "internal",
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, current inside it; a shared no-op context when tracing is off.

    ``kind`` is ``server``, ``client``, ``consumer``, ``producer`` or ``internal``; ``parent`` a
    W3C ``traceparent`` to continue (an event's, a request's header), else the current span.
    """
    if _tracer is None:
        return _OFF
    from opentelemetry.trace import SpanKind

    context = _propagator.extract({"traceparent": parent}) if parent else None
    started: contextlib.AbstractContextManager[Any] = _tracer.start_as_current_span(
        name, context=context, kind=SpanKind[kind.upper()], attributes=dict(attributes or {})
    )
    return started


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span (for an event it produces), or None when off or outside one."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` to outgoing request ``headers`` (nothing when off)."""
    if _tracer is not None:
        _propagator.inject(headers)


def server_middlewares() -> list[Any]:
    """The aiohttp middlewares for an app being built: one that makes a server span per request,
    continuing the caller's ``traceparent``, when tracing is on; none when it is off, so that an
    app built without tracing pays nothing for it on each request."""
    return [_server_middleware()] if _tracer is not None else []


def _server_middleware() -> Any:
    from aiohttp import web

    @web.middleware
    async def traced(request: web.Request, handler: Any) -> web.StreamResponse:
        if _tracer is None:
            return await handler(request)  # type: ignore[no-any-return]
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        with span(
            f"{request.method} {route}",
            kind="server",
            parent=request.headers.get("traceparent"),
            attributes={"http.request.method": request.method, "url.path": request.path},
        ) as current:
            response: web.StreamResponse = await handler(request)
            current.set_attribute("http.response.status_code", response.status)
            return response

    return traced
