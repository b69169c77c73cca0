"""Redrive support on every participant: the listing form of ``GET /status`` and ``POST /outbox/{id}/republish``.

Real servers throughout: the four participants in-process on the session's Mosquitto, a
:class:`Listener` recording what reaches the broker, real SQLite files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from contract import ListingBody, new_event
from order_saga import ORDER, SAMPLES
from order_saga.broker import MosquittoBroker
from order_saga.cli import CATALOG
from participants import ConfigError, ParticipantConfig, ParticipantService, Store
from participants.cli import build_parser, config_from_args

from ..support import Listener, Saga, config, counts, order_body

#: Placed one after the other, each finished before the next: oldest first is this order.
OUTCOMES = ["happy", "declined", "out-of-stock", "unshippable", "happy"]
#: The events each participant publishes in a happy saga, and who consumes each.
PRODUCED = {
    "order": ["order/created", "order/confirmed"],
    "payment": ["payment/authorized"],
    "inventory": ["inventory/reserved"],
    "shipping": ["shipping/scheduled"],
}
CONSUMER = {
    "order/created": "payment",
    "payment/authorized": "inventory",
    "inventory/reserved": "shipping",
    "shipping/scheduled": "order",
}
TOKEN = "redrive-Token_7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def placed(saga: Saga) -> list[str]:
    """Five workflows, one per entry of OUTCOMES, each finished before the next is placed."""
    ids = []
    for i, outcome in enumerate(OUTCOMES):
        workflow_id = await saga.place(outcome, order_id=f"list-{i}")
        await saga.wait_states(workflow_id, SAMPLES[outcome].parts)
        ids.append(workflow_id)
    return ids


async def _list(saga: Saga, name: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    async with saga.http.get(f"{saga.urls[name]}/status", params=params) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def _all_pages(saga: Saga, name: str, params: list[tuple[str, str]]) -> list[list[str]]:
    """The workflow ids of every page, following ``next`` until it is null."""
    pages: list[list[str]] = []
    after: list[tuple[str, str]] = []
    while True:
        body = await _list(saga, name, params + after)
        pages.append([s["workflow_id"] for s in body["statuses"]])
        if body["next"] is None:
            return pages
        after = [("after", body["next"])]


async def test_listing_pages_through_every_workflow_oldest_first(saga: Saga, placed: list[str]) -> None:
    """limit=2 over five workflows: pages of 2, 2 and 1, oldest first, the last with next null."""
    assert await _all_pages(saga, "order", [("limit", "2")]) == [placed[:2], placed[2:4], placed[4:]]
    whole = await _list(saga, "order", [("limit", "1000")])
    assert whole["next"] is None
    ListingBody.model_validate(whole)
    for listed in whole["statuses"]:  # the same bodies as GET /status/{id}, histories included
        assert listed == await saga.status("order", listed["workflow_id"])
    times = [(s["updated_at"], s["workflow_id"]) for s in whole["statuses"]]
    assert times == sorted(times)
    # A page that ends exactly at the last workflow says so: no next page to ask for.
    exact = await _list(saga, "order", [("limit", "5")])
    assert [s["workflow_id"] for s in exact["statuses"]] == placed and exact["next"] is None
    first = await _list(saga, "order", [("limit", "4")])
    assert await _list(saga, "order", [("after", first["next"])]) == {
        "statuses": [await saga.status("order", placed[4])],
        "next": None,
    }


async def test_listing_filters_by_state(saga: Saga, placed: list[str]) -> None:
    """Repeated state values are alternatives; each participant lists its own local states."""

    async def ids(name: str, *states: str) -> list[str]:
        return [wf for page in await _all_pages(saga, name, [("state", s) for s in states]) for wf in page]

    assert await ids("order", "CONFIRMED") == [placed[0], placed[4]]
    assert await ids("order", "CANCELLED") == placed[1:4]
    assert await ids("order", "PENDING") == []
    assert await ids("payment", "REFUNDED") == [placed[2], placed[3]]
    assert await ids("payment", "AUTHORIZED", "DECLINED") == [placed[0], placed[1], placed[4]]
    assert await ids("inventory", "RESERVED", "REJECTED", "RELEASED") == [placed[0], *placed[2:]]
    assert await ids("shipping", "NO-SUCH-STATE") == []


async def test_listing_filters_by_updated_before(saga: Saga, placed: list[str]) -> None:
    """Only workflows updated strictly before T, whatever the offset T is written with."""
    third = await saga.status("order", placed[2])
    assert third is not None
    bound = third["updated_at"]
    utc = datetime.fromisoformat(bound.replace("Z", "+00:00"))
    at_plus_two = utc.astimezone(timezone(timedelta(hours=2)))

    async def ids(before: str, *states: str) -> list[str]:
        params = [("updated_before", before), *[("state", s) for s in states]]
        return [wf for page in await _all_pages(saga, "order", params) for wf in page]

    assert await ids(bound) == placed[:2]
    assert await ids(at_plus_two.isoformat()) == placed[:2]
    assert await ids(bound, "CANCELLED") == [placed[1]]
    assert await ids("1970-01-01T00:00:00Z") == []
    assert await ids("9999-12-31T23:59:59Z") == placed
    assert await ids("0001-01-01T00:00:00+05:00") == []  # before year 1 in UTC: nothing


@pytest.mark.parametrize(
    "query",
    [
        "state=",
        "state=not%20a%20state",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=%2B5",
        "limit=1&limit=2",
        "updated_before=yesterday",
        "updated_before=2026-02-30T00:00:00Z",
        "updated_before=2026-01-01%2000:00:00Z",
        "updated_before=2026-01-01T00:00:00",
        "after=zz",
        "after=ABCD",
        "after=abc",
        "workflow_id=a&state=PENDING",
        "workflow_id=a&limit=5",
        "stat=PENDING",
        "limit=5&surprise=1",
        "",
    ],
)
async def test_bad_listing_queries_are_problem_details(saga: Saga, query: str) -> None:
    """Bad values, both forms at once, unknown parameters and no parameter at all are 400s."""
    async with saga.http.get(f"{saga.urls['payment']}/status?{query}") as r:
        assert r.status == 400
        assert r.content_type == "application/problem+json"
        body = await r.json()
    assert body["status"] == 400
    if not query:
        assert "workflow_id" in body["detail"] and "state" in body["detail"]


async def test_republish_sends_the_same_events_again_and_changes_no_state(
    saga: Saga, session_broker: MosquittoBroker, prefix: str
) -> None:
    """Each participant republishes exactly what it produced, byte for byte; consumers drop them all."""
    async with Listener(session_broker.url, f"{prefix}/#") as heard:
        workflow_id = await saga.place("happy", order_id="redrive-1")
        await saga.wait_states(workflow_id, SAMPLES["happy"].parts)
        await heard.wait_for(lambda h: len(h.messages) >= 5)
        first = {topic.removeprefix(f"{prefix}/"): payload for topic, payload in heard.messages}
        assert sorted(first) == sorted(t for ts in PRODUCED.values() for t in ts)
        statuses = {name: await saga.status(name, workflow_id) for name in saga.urls}
        before = {name: await counts(saga.http, url) for name, url in saga.urls.items()}

        for name, topics in PRODUCED.items():
            seen = len(heard.messages)
            wanted = seen + len(topics)
            async with saga.http.post(f"{saga.urls[name]}/outbox/{workflow_id}/republish") as r:
                assert r.status == 202
                assert await r.json() == {"republished": len(topics)}
            await heard.wait_for(lambda h, n=wanted: len(h.messages) >= n)
            again = [(t.removeprefix(f"{prefix}/"), p) for t, p in heard.messages[seen:]]
            assert again == [(t, first[t]) for t in topics]  # same bytes, so the same ids, in order
            for topic in topics:
                consumer = CONSUMER.get(topic)
                if consumer is None:
                    continue
                url, expected = saga.urls[consumer], before[consumer]["duplicates"] + 1
                async with asyncio.timeout(10):
                    while (await counts(saga.http, url))["duplicates"] < expected:
                        await asyncio.sleep(0.02)

        await asyncio.sleep(0.3)  # anything more would show now
        assert len(heard.messages) == 10
    after = {name: await counts(saga.http, url) for name, url in saga.urls.items()}
    for name in saga.urls:
        assert after[name]["applied"] == before[name]["applied"], name
        assert after[name]["deadlettered"] == before[name]["deadlettered"], name
        assert after[name]["duplicates"] == before[name]["duplicates"] + 1, name
        assert after[name]["published"] == before[name]["published"] + len(PRODUCED[name]), name
        assert await saga.status(name, workflow_id) == statuses[name], name
    ids = [json.loads(p)["id"] for _, p in heard.messages]
    assert sorted(ids[:5]) == sorted(ids[5:])


async def test_republish_of_an_unknown_workflow_is_zero_and_a_bad_id_a_400(saga: Saga) -> None:
    """A workflow with no events republishes nothing; an id the contract refuses is a 400."""
    async with saga.http.post(f"{saga.urls['shipping']}/outbox/never-seen/republish") as r:
        assert r.status == 202
        assert await r.json() == {"republished": 0}
    async with saga.http.post(f"{saga.urls['shipping']}/outbox/bad%20id/republish") as r:
        assert r.status == 400
        assert r.content_type == "application/problem+json"
    async with saga.http.get(f"{saga.urls['shipping']}/outbox/never-seen/republish") as r:
        assert r.status == 405


@contextlib.asynccontextmanager
async def _order_service(
    broker: MosquittoBroker, prefix: str, tmp: Path, **changes: Any
) -> AsyncIterator[tuple[ParticipantService, aiohttp.ClientSession]]:
    cfg = dataclasses.replace(config(broker.url, prefix, tmp / "order.sqlite3"), **changes)
    async with ParticipantService(ORDER, config=cfg) as svc, aiohttp.ClientSession() as http:
        async with asyncio.timeout(15):
            await svc.wait_ready()
        yield svc, http


async def test_republish_and_listing_need_the_token_when_auth_is_on(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """With a token configured, both new routes answer 401 without it and work with it."""
    async with _order_service(session_broker, prefix, tmp_path, token=TOKEN) as (svc, http):
        async with http.post(f"{svc.url}/orders", json=order_body("happy", "auth-1"), headers=AUTH) as r:
            assert r.status == 202
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.post(f"{svc.url}/outbox/auth-1/republish", headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(f"{svc.url}/status?limit=5", headers=headers) as r:
                assert r.status == 401
        async with http.post(f"{svc.url}/outbox/auth-1/republish", headers=AUTH) as r:
            assert r.status == 202
            assert await r.json() == {"republished": 1}
        async with http.get(f"{svc.url}/status?state=PENDING", headers=AUTH) as r:
            assert r.status == 200
            assert [s["workflow_id"] for s in (await r.json())["statuses"]] == ["auth-1"]


@pytest.mark.parametrize(("retention_s", "kept"), [(3600.0, 1), (0.0, 0)])
async def test_published_events_stay_republishable_for_the_outbox_retention(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path, retention_s: float, kept: int
) -> None:
    """Pruning drops published events only once they are older than ``outbox_retention_s``."""
    running = _order_service(session_broker, prefix, tmp_path, outbox_retention_s=retention_s)
    async with running as (svc, http):
        async with http.post(f"{svc.url}/orders", json=order_body("happy", "kept-1")) as r:
            assert r.status == 202
        async with asyncio.timeout(10):
            while svc.link.counts["published"] < 1:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.01)  # sent_at is now strictly in the past
        svc.link._prune()
        async with http.post(f"{svc.url}/outbox/kept-1/republish") as r:
            assert await r.json() == {"republished": kept}


def test_outbox_retention_is_checked_and_taken_from_the_command_line() -> None:
    """Negative, not finite, or longer than the inbox remembers ids: a ConfigError; the CLI sets it."""
    for bad in (-1.0, float("nan"), 7 * 24 * 3600 + 1.0):
        with pytest.raises(ConfigError, match="outbox_retention_s"):
            ParticipantConfig(outbox_retention_s=bad)
    args = build_parser(CATALOG).parse_args(["payment", "--outbox-retention-s", "120"])
    assert config_from_args(args, CATALOG).outbox_retention_s == 120.0
    assert (
        config_from_args(build_parser(CATALOG).parse_args(["payment"]), CATALOG).outbox_retention_s == 3600.0
    )


_OLD_OUTBOX = """
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at TEXT NOT NULL,
    sent_at    TEXT
);
"""


def test_an_older_database_gets_the_outbox_workflow_column_filled_in(tmp_path: Path) -> None:
    """Rows written before the column existed are found by their event's subject."""
    db = tmp_path / "old.sqlite3"
    event = new_event(source="order", name="created", subject="old-1", state="PENDING", version=1)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executescript(_OLD_OUTBOX)
        conn.execute(
            "INSERT INTO outbox (topic, payload, created_at, sent_at) VALUES (?, ?, ?, ?)",
            ("saga/order/created", event.to_json(), event.time, event.time),
        )
    store = Store(db)
    try:
        assert store.unsent(10) == []
        assert store.republish("old-1") == 1
        assert store.republish("other") == 0
        assert [row.payload for row in store.unsent(10)] == [event.to_json()]
    finally:
        store.close()
    store = Store(db)  # opening it again migrates nothing twice
    try:
        assert [row.payload for row in store.unsent(10)] == [event.to_json()]
        indexes = {row[1] for row in store._conn.execute("PRAGMA index_list(outbox)")}
        assert "outbox_workflow" in indexes
    finally:
        store.close()
