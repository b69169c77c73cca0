"""Prometheus metrics of one :class:`~aggregator.Aggregator` (its own registry, so several can live
in one process: tests, gateways embedding more than one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """The aggregator's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.breaker = Gauge(
            "aggregator_breaker_state",
            "Circuit breaker state (0 closed, 1 half-open, 2 open)",
            ["participant"],
            registry=r,
        )
        self.cache = Counter(
            "aggregator_cache_lookups",
            "Part reads served from memory or not",
            ["participant", "result"],
            registry=r,
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
        self.views = Counter("aggregator_views", "Views served by HTTP status", ["status"], registry=r)
        self.view_latency = Histogram(
            "aggregator_view_latency_seconds",
            "Time to build a view",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.events = Counter("aggregator_events", "Broker events by outcome", ["outcome"], registry=r)
        self.broker_connected = Gauge(
            "aggregator_broker_connected", "1 while the event subscription is up", registry=r
        )
        self.watchers = Gauge("aggregator_watchers", "Open watch streams", registry=r)
        self.stalled = Gauge(
            "aggregator_stalled_workflows", "Stalled workflows found by the last scan", registry=r
        )
        self.redrives = Counter(
            "aggregator_redrives",
            "Requests to a participant to republish a workflow's events, by outcome",
            ["participant", "outcome"],
            registry=r,
        )
        self.contradicted = Counter(
            "aggregator_events_contradicted",
            "Event-sourced parts dropped because the participant, asked after the event arrived, "
            "answered a lower version (a forged or misrouted event)",
            ["participant"],
            registry=r,
        )
        self._lookups: dict[tuple[str, str], Counter] = {}

    def lookup(self, participant: str, result: str) -> None:
        """Count one part read from memory (``hit``) or not; the label child is kept, as this is hot."""
        child = self._lookups.get((participant, result))
        if child is None:
            child = self._lookups[(participant, result)] = self.cache.labels(participant, result)
        child.inc()

    def set_breaker(self, participant: str, state: str) -> None:
        """Publish a breaker's state."""
        self.breaker.labels(participant).set(_BREAKER_VALUE[state])

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when never set): for tests and benchmarks."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
