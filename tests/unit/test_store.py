"""PartStore: monotonic offers, bounded LRU, change listeners and ``reach`` (min_version waits)."""

from __future__ import annotations

import asyncio

from aggregator._store import Offered, PartStore
from aggregator.view import Part

from .factories import make_part

WF = "ord-1"


def test_first_offer_is_taken_and_changed() -> None:
    store = PartStore(size=10)
    part = make_part(version=1)
    assert store.offer(WF, part) == Offered(part, taken=True, changed=True)
    assert store.get("payment", WF) is part
    assert store.get("payment", "ord-2") is None
    assert store.get("order", WF) is None
    assert len(store) == 1


def test_higher_version_replaces() -> None:
    store = PartStore(size=10)
    store.offer(WF, make_part(version=1, state="AUTHORIZED"))
    newer = make_part(version=2, state="REFUNDED", observed=101.0)
    offered = store.offer(WF, newer)
    assert (offered.part, offered.taken, offered.changed) == (newer, True, True)
    assert store.get("payment", WF) is newer


def test_lower_version_is_not_taken_and_the_kept_part_is_served() -> None:
    store = PartStore(size=10)
    kept = make_part(version=3, state="REFUNDED", observed=100.0)
    store.offer(WF, kept)
    late = make_part(version=2, state="AUTHORIZED", observed=200.0)  # newer observation, older version
    offered = store.offer(WF, late)
    assert offered == Offered(kept, taken=False, changed=False)
    assert store.get("payment", WF) is kept


def test_equal_version_is_taken_but_not_changed() -> None:
    store = PartStore(size=10)
    store.offer(WF, make_part(version=2, observed=100.0))
    again = make_part(version=2, observed=105.0, source="cache")
    offered = store.offer(WF, again)
    assert (offered.part, offered.taken, offered.changed) == (again, True, False)
    assert store.get("payment", WF) is again


def test_equal_version_with_an_older_observation_is_not_taken() -> None:
    store = PartStore(size=10)
    kept = make_part(version=2, observed=105.0)
    store.offer(WF, kept)
    offered = store.offer(WF, make_part(version=2, observed=100.0))
    assert offered == Offered(kept, taken=False, changed=False)


def test_equal_version_keeps_the_known_history() -> None:
    store = PartStore(size=10)
    store.offer(WF, make_part(version=2, state="REFUNDED", history=("AUTHORIZED", "REFUNDED")))
    offered = store.offer(WF, make_part(version=2, state="REFUNDED", observed=101.0))
    assert offered.taken is True
    assert offered.part.history == ("AUTHORIZED", "REFUNDED")
    stored = store.get("payment", WF)
    assert stored is not None
    assert stored.history == ("AUTHORIZED", "REFUNDED")


def test_parts_of_different_participants_and_workflows_are_independent() -> None:
    store = PartStore(size=10)
    store.offer(WF, make_part("payment", version=5))
    offered = store.offer(WF, make_part("order", version=1))
    assert (offered.taken, offered.changed) == (True, True)
    assert store.offer("ord-2", make_part("payment", version=1)).taken is True
    assert len(store) == 3


def test_bounded_size_evicts_the_least_recently_used() -> None:
    store = PartStore(size=2)
    store.offer("a", make_part(version=1))
    store.offer("b", make_part(version=1))
    assert store.get("payment", "a") is not None  # "a" is now the most recently used
    store.offer("c", make_part(version=1))
    assert len(store) == 2
    assert store.get("payment", "b") is None
    assert store.get("payment", "a") is not None
    assert store.get("payment", "c") is not None


def test_after_eviction_an_older_version_is_taken_again() -> None:
    """The documented price of the bound: monotonic only while the workflow is in the store."""
    store = PartStore(size=1)
    store.offer("a", make_part(version=5))
    store.offer("b", make_part(version=1))
    assert store.offer("a", make_part(version=2)).taken is True


def test_listeners_are_told_of_changes_only() -> None:
    store = PartStore(size=10)
    seen: list[Part] = []
    other: list[Part] = []
    with store.listening(WF, seen.append), store.listening("ord-2", other.append):
        assert store.listened == 2
        v1 = make_part(version=1)
        store.offer(WF, v1)
        store.offer(WF, make_part(version=1, observed=101.0))  # same version, same state: no change
        store.offer(WF, make_part(version=0, observed=102.0))  # older: not taken
        v2 = make_part(version=2, state="REFUNDED", observed=103.0)
        store.offer(WF, v2)
    assert seen == [v1, v2]
    assert other == []
    assert store.listened == 0
    store.offer(WF, make_part(version=3, observed=104.0))
    assert seen == [v1, v2]


def test_same_version_with_another_state_is_a_change() -> None:
    store = PartStore(size=10)
    seen: list[Part] = []
    store.offer(WF, make_part(version=1, state="AUTHORIZED"))
    with store.listening(WF, seen.append):
        offered = store.offer(WF, make_part(version=1, state="DECLINED", observed=101.0))
    assert (offered.taken, offered.changed) == (True, True)
    assert [p.state for p in seen] == ["DECLINED"]


def test_several_listeners_of_one_workflow_are_all_told_and_removed_one_by_one() -> None:
    store = PartStore(size=10)
    first: list[Part] = []
    second: list[Part] = []
    with store.listening(WF, first.append):
        with store.listening(WF, second.append):
            store.offer(WF, make_part(version=1))
        assert store.listened == 1
        store.offer(WF, make_part(version=2, observed=101.0))
    assert [p.version for p in first] == [1, 2]
    assert [p.version for p in second] == [1]
    assert store.listened == 0


async def test_reach_returns_at_once_when_the_version_is_there() -> None:
    store = PartStore(size=10)
    kept = make_part(version=3)
    store.offer(WF, kept)
    assert await store.reach("payment", WF, 2, timeout=0.0) is kept
    assert await store.reach("payment", WF, 3, timeout=0.0) is kept
    assert store.listened == 0


async def test_reach_resolves_when_the_version_arrives() -> None:
    store = PartStore(size=10)
    store.offer(WF, make_part(version=1))
    loop = asyncio.get_running_loop()
    loop.call_later(0.005, store.offer, WF, make_part("order", version=9))  # another participant
    loop.call_later(0.01, store.offer, WF, make_part(version=2, observed=101.0))  # not yet
    target = make_part(version=3, observed=102.0)
    loop.call_later(0.02, store.offer, WF, target)
    started = loop.time()
    reached = await store.reach("payment", WF, 3, timeout=5.0)
    assert reached is target
    assert loop.time() - started < 1.0
    assert store.listened == 0


async def test_reach_times_out_with_none() -> None:
    store = PartStore(size=10)
    store.offer(WF, make_part(version=1))
    loop = asyncio.get_running_loop()
    loop.call_later(0.005, store.offer, WF, make_part(version=2, observed=101.0))
    assert await store.reach("payment", WF, 3, timeout=0.03) is None
    assert await store.reach("payment", "unknown", 1, timeout=0.01) is None
    assert store.listened == 0


def test_take_keeps_what_offer_would_keep_as_is_and_declines_the_rest() -> None:
    """``take`` (an answer's fast path) keeps a first or newer part; anything needing care is left to ``offer``."""
    h = ("AUTHORIZED",)
    kept = make_part(version=2, observed=100.0, history=h)
    cases = [
        (None, make_part(version=1, history=h), True),
        (kept, make_part(version=3, observed=50.0, history=h), True),
        (kept, make_part(version=2, observed=100.0, history=h), True),
        (kept, make_part(version=2, observed=101.0, history=h), True),
        (kept, make_part(version=2, observed=101.0), False),  # offer carries the kept history over
        (kept, make_part(version=2, observed=99.0, history=h), False),
        (kept, make_part(version=1, observed=200.0, history=h), False),
        (make_part(version=2, source="event", history=h), make_part(version=1, history=h), False),
    ]
    for before, answer, taken in cases:
        store, twin = PartStore(size=10), PartStore(size=10)
        for s in (store, twin):
            if before is not None:
                s.offer(WF, before)
        assert store.take(WF, answer) is taken, (before, answer)
        if taken:  # as an offer would have
            assert store.get("payment", WF) is answer
            assert twin.offer(WF, answer) == Offered(
                answer, taken=True, changed=before is None or before.version != answer.version
            )
        else:
            assert store.get("payment", WF) is before


def test_take_declines_while_someone_listens() -> None:
    """Listeners are told of changes by ``offer``: ``take`` leaves a listened workflow to it."""
    store = PartStore(size=10)
    with store.listening(WF, lambda part: None):
        assert store.take(WF, make_part(version=1)) is False
    assert store.get("payment", WF) is None
    assert store.take(WF, make_part(version=1)) is True


def test_take_is_bounded_like_offer() -> None:
    store = PartStore(size=2)
    for n in range(3):
        assert store.take(f"w-{n}", make_part(version=1))
    assert len(store) == 2
    assert store.get("payment", "w-0") is None
