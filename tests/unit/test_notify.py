"""Workflow events without a broker: ids, topics, the store's listener for every workflow, and
what the announcer says of a sequence of views (transitions, stalls, bounds)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from aggregator._notify import Announcer, WorkflowEvent, event_id, topic_level
from aggregator._store import PartStore
from aggregator.definition import load_definition
from aggregator.metrics import Metrics
from aggregator.view import Part, build_view
from contract import utc_now

from .factories import make_part

NAMES = ("order", "payment", "inventory", "shipping")


def _parts(**states: tuple[str | None, int]) -> dict[str, Part]:
    return {
        name: make_part(name, version, state, source="event") for name, (state, version) in states.items()
    }


def test_an_event_id_is_a_digest_of_the_workflow_the_name_and_the_parts_versions() -> None:
    """The same inputs give the same id whatever the parts' order; any difference gives another."""
    parts = _parts(order=("PENDING", 1), payment=("AUTHORIZED", 1))
    same = dict(reversed(list(parts.items())))
    assert event_id("wf", "IN_PROGRESS", parts) == event_id("wf", "IN_PROGRESS", same)
    assert len(event_id("wf", "IN_PROGRESS", parts)) == 32
    others = {
        event_id("wf2", "IN_PROGRESS", parts),
        event_id("wf", "stalled", parts),
        event_id("wf", "IN_PROGRESS", _parts(order=("PENDING", 1), payment=("AUTHORIZED", 2))),
    }
    assert event_id("wf", "IN_PROGRESS", parts) not in others
    assert len(others) == 3


def test_a_state_is_one_topic_level_whatever_it_holds() -> None:
    """Characters MQTT gives a meaning in topics are percent-encoded; the rest is kept."""
    assert topic_level("COMPLETED") == "COMPLETED"
    assert topic_level("a/b+c#d%e") == "a%2Fb%2Bc%23d%25e"


def test_a_listener_of_every_workflow_hears_each_change_and_answers_are_offered_not_taken() -> None:
    """While a listener of every workflow listens, take() declines (so offer() tells it)."""
    store = PartStore(size=10)
    heard: list[tuple[str, int]] = []
    with store.listening_to_all(lambda wf, part: heard.append((wf, part.version))):
        assert store.take("a", make_part(version=1)) is False
        store.offer("a", make_part(version=1))
        store.offer("a", make_part(version=1))  # no change: not heard
        store.offer("b", make_part(version=2))
    assert store.take("c", make_part(version=1)) is True
    store.offer("a", make_part(version=3))
    assert heard == [("a", 1), ("b", 2)]


class _Harness:
    """An announcer over a store holding the example saga's parts, recording what it sends."""

    def __init__(self, *, stall_after_ms: int = 30_000, size: int | None = None) -> None:
        self.definition = load_definition().with_settings(stall_after_ms=stall_after_ms)
        self.store = PartStore(1000)
        self.sent: list[WorkflowEvent] = []
        self.reads: list[str] = []
        self.announcer = Announcer(
            definition=self.definition,
            store=self.store,
            build=lambda wf, parts: build_view(self.definition, wf, parts, generated_at=utc_now()),
            read=self._read,
            metrics=Metrics(),
            sinks=[self.sent.append],
            size=size,
        )

    async def _read(self, workflow_id: str) -> Any:
        self.reads.append(workflow_id)

    def offer(self, wf: str, name: str, state: str | None, version: int, **kw: Any) -> None:
        """Offer a part changed now (or at ``updated_at``), as the event feed or a read would."""
        part = make_part(name, version, state, source=kw.get("source", "event"))
        if state is not None:
            part = dataclasses.replace(part, updated_at=kw.get("updated_at", utc_now()))
        if self.store.offer(wf, part).changed:  # as the store's listener is called
            self.announcer.changed(wf, part)

    def names(self) -> list[str]:
        return [e.name for e in self.sent]


def test_transitions_are_announced_once_and_a_step_within_a_state_is_not() -> None:
    """A new workflow's state, then each change of state; parts missing are read first."""
    h = _Harness()
    h.offer("w", "order", "PENDING", 1)
    assert h.names() == [] and h.announcer._reads  # three parts unknown: a read is wanted
    for name in ("payment", "inventory", "shipping"):
        h.offer("w", name, None, 0)
    h.offer("w", "payment", "AUTHORIZED", 1)  # IN_PROGRESS still: a step, not a state
    h.offer("w", "inventory", "RESERVED", 1)
    h.offer("w", "shipping", "SCHEDULED", 1)
    h.offer("w", "order", "CONFIRMED", 2)
    assert h.names() == ["IN_PROGRESS", "COMPLETED"]
    assert len({e.id for e in h.sent}) == 2
    assert all(e.workflow_id == "w" for e in h.sent)


def test_a_workflow_first_seen_through_a_read_is_remembered_not_announced() -> None:
    """Parts fetched for a read of an old workflow announce nothing; its next change does."""
    h = _Harness()
    for name, state, version in (
        ("order", "PENDING", 1),
        ("payment", "AUTHORIZED", 1),
        ("inventory", None, 0),
    ):
        h.offer("old", name, state, version, source="live")
    h.offer("old", "shipping", None, 0, source="live")
    assert h.names() == []
    h.offer("old", "payment", "REFUNDED", 2)
    assert h.names() == ["COMPENSATING"]


def test_a_quiet_workflow_is_announced_stalled_when_due_and_recovered_when_it_moves() -> None:
    """Due checks find the stall; the next part change recovers it; terminal workflows never stall."""
    h = _Harness(stall_after_ms=200)
    long_ago = "2020-01-01T00:00:00.000000Z"
    h.offer("s", "order", "PENDING", 1, updated_at=long_ago)
    for name in ("payment", "inventory", "shipping"):
        h.offer("s", name, None, 0)
    assert h.names() == ["IN_PROGRESS", "stalled"]  # already quiet when first seen
    h.offer("s", "payment", "AUTHORIZED", 1)
    assert h.names()[-1] == "recovered"
    assert h.announcer.due_checks() == 0  # due only stall_after_ms from now
    time.sleep(0.25)
    assert h.announcer.due_checks() == 1
    assert h.names()[-1] == "stalled"
    h.offer("s", "order", "CONFIRMED", 2)
    assert h.names()[-2:] == ["recovered", "COMPLETED"]
    assert h.announcer.due_checks(time.monotonic() + 3600) == 0  # finished: nothing due


def test_what_is_remembered_is_bounded_and_a_forgotten_workflow_is_new_again_under_the_same_id() -> None:
    """Past ``size`` workflows the oldest is forgotten; its next change is announced with the id
    its first announcement had, when the parts are at the same versions."""
    h = _Harness(size=2)
    for wf in ("a", "b", "c"):
        for name in NAMES:
            h.offer(wf, name, "PENDING" if name == "order" else None, 1 if name == "order" else 0)
    assert h.announcer.remembered == 2
    first = h.sent[0]
    h.announcer.check("a", announce=True)  # as after an event that changed nothing it remembers
    assert h.sent[-1].name == "IN_PROGRESS" and h.sent[-1].id == first.id


def test_reads_of_missing_parts_are_bounded(monkeypatch: Any) -> None:
    """Past MAX_READS workflows waiting for a read, more are counted, not queued."""
    import aggregator._notify as notify

    monkeypatch.setattr(notify, "MAX_READS", 2)
    h = _Harness()
    for wf in ("x", "y", "z"):
        h.offer(wf, "order", "PENDING", 1)
    assert list(h.announcer._reads) == ["x", "y"]

    async def drain() -> None:
        task = asyncio.create_task(h.announcer.read_missing())
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(drain())
    assert h.reads == ["x", "y"]
