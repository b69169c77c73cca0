"""Prometheus metrics of one :class:`~aggregator.Aggregator` (its own registry, so several can live
in one process: tests, gateways embedding more than one), with the process's own (``process_*``:
CPU, memory, open files; each registry reports the one process it lives in)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}

#: The media type of :func:`~prometheus_client.generate_latest`'s text, as prometheus_client
#: serves it to a scraper that asks for nothing else: ``text/plain; version=0.0.4; charset=utf-8``.
CONTENT_TYPE: str = choose_encoder("")[1]


class Tally(Collector):
    """A counter bumped on every read, kept as plain integers per label values and turned into
    samples only when scraped: an increment is a dict update, not a label lookup and a lock."""

    def __init__(self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry) -> None:
        self._name, self._documentation, self._labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, *labels: str) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def inc_each(self, keys: Iterable[tuple[str, ...]]) -> None:
        """:meth:`inc` once for each of these label values."""
        counts = self.counts
        for labels in keys:
            counts[labels] = counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, value in sorted(self.counts.items()):
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labels)


#: Histogram buckets of durations, in seconds: down to 50 µs, since calls on loopback or within a
#: host take a fraction of a millisecond.
SECONDS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)


class Metrics:
    """The aggregator's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.calls = Counter(
            "aggregator_participant_calls",
            "Calls to participants by outcome",
            ["participant", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "aggregator_participant_latency_seconds",
            "Latency of successful participant calls",
            ["participant"],
            buckets=SECONDS,
            registry=r,
        )
        self.breaker = Gauge(
            "aggregator_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["participant"],
            registry=r,
        )
        self.cache = Tally(
            "aggregator_cache_lookups", "Part reads served from memory or not", ["participant", "result"], r
        )
        self.coalesced = Counter(
            "aggregator_coalesced",
            "Part reads that joined a call already in flight",
            ["participant"],
            registry=r,
        )
        self.hedges = Counter("aggregator_hedges", "Hedge requests sent", ["participant"], registry=r)
        self.hedge_wins = Counter(
            "aggregator_hedge_wins", "Hedge requests that answered first", ["participant"], registry=r
        )
        self.batched = Counter(
            "aggregator_batched_parts",
            "Parts fetched together with other workflows' parts in one batch call",
            ["participant"],
            registry=r,
        )
        self.views = Tally("aggregator_views", "Views served by HTTP status", ["status"], r)
        self.view_latency = Histogram(
            "aggregator_view_latency_seconds",
            "Time to build a view",
            buckets=SECONDS[:-1],
            registry=r,
        )
        self.events = Counter("aggregator_events", "Broker events by outcome", ["outcome"], registry=r)
        self.broker_connected = Gauge(
            "aggregator_broker_connected", "1 while the event subscription is up", registry=r
        )
        self.watchers = Gauge("aggregator_watchers", "Open watch streams", registry=r)
        self.stalled = Gauge(
            "aggregator_stalled_workflows",
            "Stalled workflows counted by the last scan: a stall scan (serve --redrive auto, or "
            "GET /workflows?stalled=true, which stops at its limit: then a lower bound) over up to "
            "10,000 listed workflows, or a complete GET /summary over every in-flight one",
            registry=r,
        )
        self.stalled_by_reason = Gauge(
            "aggregator_stalled_workflows_by_reason",
            "aggregator_stalled_workflows by why they stall (no_progress, part_unavailable, "
            "anomaly, unmapped), set by the same scans",
            ["reason"],
            registry=r,
        )
        self.stalls_raised = Counter(
            "aggregator_stalls_raised",
            "Workflows seen stalled by a view built here, having not been stalled in the one before "
            "(or never seen), by why they stall",
            ["reason"],
            registry=r,
        )
        self.stalls_cleared = Counter(
            "aggregator_stalls_cleared",
            "Workflows seen stalled that a later view showed moving again or finished, by why they had stalled",
            ["reason"],
            registry=r,
        )
        self.redrives = Counter(
            "aggregator_redrives",
            "Requests to a participant to republish a workflow's events, by outcome",
            ["participant", "outcome"],
            registry=r,
        )
        self.clock_offset = Gauge(
            "aggregator_participant_clock_offset_seconds",
            "A participant's clock minus this aggregator's, as measured (0 while they agree as far as "
            "can be measured)",
            ["participant"],
            registry=r,
        )
        self.contradicted = Counter(
            "aggregator_events_contradicted",
            "Event-sourced parts dropped because the participant, asked after the event arrived, "
            "answered a lower version (a forged or misrouted event)",
            ["participant"],
            registry=r,
        )
        self.workflow_events = Counter(
            "aggregator_workflow_events",
            "Workflow events (a new derived state, stalled, recovered) by outcome: announced; published "
            "to the broker (again after a lost link); dropped, the outgoing queue full; unread, a "
            "workflow whose missing parts could not be queued for a read",
            ["outcome"],
            registry=r,
        )
        self.workflow_events_queued = Gauge(
            "aggregator_workflow_events_queued", "Workflow events waiting to be published", registry=r
        )
        self.webhooks = Counter(
            "aggregator_webhook_deliveries",
            "Webhook deliveries by receiver and outcome: delivered; retried (an attempt failed, another "
            "follows); failed (given up after max_attempts); rejected (a final 4xx answer); dropped "
            "(the receiver's queue was full)",
            ["receiver", "outcome"],
            registry=r,
        )
        self.webhooks_queued = Gauge(
            "aggregator_webhook_queued", "Events waiting for a webhook receiver", ["receiver"], registry=r
        )

    def lookup(self, participant: str, result: str) -> None:
        """Count one part read from memory (``hit``) or not."""
        self.cache.inc(participant, result)

    def set_breaker(self, participant: str, state: str) -> None:
        """Publish a breaker's state."""
        self.breaker.labels(participant).set(_BREAKER_VALUE[state])

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when never set): for tests and benchmarks."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
