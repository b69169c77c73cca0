"""Watchers: the bound on concurrent watchers, and each watcher's queue of part changes."""

from __future__ import annotations

import pytest

from aggregator._store import PartStore
from aggregator._watch import Watchers
from aggregator.errors import TooManyWatchers
from aggregator.metrics import Metrics

from .factories import make_part

WF = "ord-1"


def gauge(metrics: Metrics) -> float:
    return metrics.value("aggregator_watchers")


def make(limit: int) -> tuple[Watchers, PartStore, Metrics]:
    store = PartStore(size=100)
    metrics = Metrics()
    return Watchers(limit=limit, store=store, metrics=metrics), store, metrics


def test_subscribe_counts_and_unsubscribe_uncounts() -> None:
    watchers, store, metrics = make(limit=3)
    assert (watchers.count, watchers.full, gauge(metrics)) == (0, False, 0.0)
    with watchers.subscribe(WF):
        assert (watchers.count, gauge(metrics), store.listened) == (1, 1.0, 1)
        with watchers.subscribe("ord-2"):
            assert (watchers.count, gauge(metrics), store.listened) == (2, 2.0, 2)
        assert (watchers.count, gauge(metrics), store.listened) == (1, 1.0, 1)
    assert (watchers.count, gauge(metrics), store.listened) == (0, 0.0, 0)


def test_limit_refuses_the_next_watcher_until_one_leaves() -> None:
    watchers, _, metrics = make(limit=2)
    with watchers.subscribe(WF), watchers.subscribe(WF):
        assert watchers.full is True
        with pytest.raises(TooManyWatchers) as caught, watchers.subscribe(WF):
            pass
        assert caught.value.limit == 2
        assert "limit 2" in str(caught.value)
        assert (watchers.count, gauge(metrics)) == (2, 2.0)  # the refused one was never counted
    assert watchers.full is False
    with watchers.subscribe(WF):
        assert watchers.count == 1


def test_an_error_inside_the_block_still_unsubscribes() -> None:
    watchers, store, metrics = make(limit=1)
    with pytest.raises(RuntimeError, match="client left"), watchers.subscribe(WF):
        raise RuntimeError("client left")
    assert (watchers.count, gauge(metrics), store.listened) == (0, 0.0, 0)


def test_queue_receives_the_workflows_changes_in_order() -> None:
    watchers, store, _ = make(limit=5)
    with watchers.subscribe(WF) as queue, watchers.subscribe(WF) as second:
        store.offer(WF, make_part("payment", version=1))
        store.offer("ord-2", make_part("payment", version=1))  # another workflow
        store.offer(WF, make_part("payment", version=1, observed=101.0))  # no change
        store.offer(WF, make_part("order", version=1))
        store.offer(WF, make_part("payment", version=2, state="REFUNDED", observed=102.0))
        got = [queue.get_nowait() for _ in range(queue.qsize())]
        assert second.qsize() == 3
    assert [(p.participant, p.version) for p in got] == [("payment", 1), ("order", 1), ("payment", 2)]
    store.offer(WF, make_part("payment", version=3, observed=103.0))
    assert queue.empty()  # unsubscribed: nothing more arrives


def test_a_slow_watcher_loses_the_oldest_changes() -> None:
    watchers, store, _ = make(limit=1)
    with watchers.subscribe(WF) as queue:
        for version in range(1, 301):
            store.offer(WF, make_part(version=version, observed=float(version)))
        assert queue.qsize() == queue.maxsize == 256
        versions = [queue.get_nowait().version for _ in range(queue.qsize())]
    assert versions == list(range(45, 301))
