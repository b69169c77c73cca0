"""A participant's Prometheus metrics, served at ``GET /metrics`` (docs/design.md, "Participant HTTP API").

Its own registry (several participants can run in one process: tests, the demo) holding the
counters ``/healthz`` reports, read when scraped (the handlers and the broker link keep bumping
their plain dicts), the outbox backlog and the broker link's state, and the process's
``process_*`` metrics.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .running import Participant

#: The media type of :func:`~prometheus_client.generate_latest`'s text, as prometheus_client
#: serves it to a scraper that asks for nothing else: ``text/plain; version=0.0.4; charset=utf-8``.
CONTENT_TYPE: str = choose_encoder("")[1]

#: What each of the ``/healthz`` counts counts (a count not listed gets a generic description).
COUNTED = {
    "status_requests": "GET /status/{workflow_id} requests",
    "batch_requests": "Batch GET /status requests",
    "listing_requests": "Listing GET /status requests",
    "republish_requests": "POST /outbox/{workflow_id}/republish requests",
    "applied": "Events applied",
    "duplicates": "Events dropped by the inbox as already applied",
    "deadlettered": "Events dead-lettered",
    "published": "Outbox events published (acknowledged by the broker)",
    "watermarks": "Watermarks published",
    "connects": "Connections to the broker",
}

_NOT_IN_A_NAME = re.compile(r"[^a-zA-Z0-9_]")


class _Counts(Collector):
    """The participant's counters and gauges, as samples made when scraped."""

    def __init__(self, service: Participant) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        name = service.name
        for key, value in {**service.counts, **service.link.counts}.items():
            family = CounterMetricFamily(
                f"participant_{_NOT_IN_A_NAME.sub('_', key)}",
                COUNTED.get(key, f"{key} since the process started"),
                labels=["participant"],
            )
            family.add_metric([name], value)
            yield family
        connected = GaugeMetricFamily(
            "participant_broker_connected", "1 while the link to the broker is up", labels=["participant"]
        )
        connected.add_metric([name], 1 if service.link.connected else 0)
        yield connected
        try:
            backlog = service.store.unsent_count()
        except sqlite3.Error:  # the database is closed or failing: /readyz says so; no sample
            return
        unsent = GaugeMetricFamily(
            "participant_outbox_unsent",
            "Outbox events committed but not yet acknowledged by the broker",
            labels=["participant"],
        )
        unsent.add_metric([name], backlog)
        yield unsent


class ParticipantMetrics:
    """The registry behind one participant's ``GET /metrics``."""

    def __init__(self, service: Participant) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Counts(service))
        ProcessCollector(registry=self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """A sample's current value (None when there is none): for tests."""
        return self.registry.get_sample_value(name, labels)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
