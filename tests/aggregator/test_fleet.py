"""Fleet queries on real participants: ``GET /workflows?state=…`` pages, ``GET /summary`` counts, the
scan budget, and hostile query strings.

The four participants run in-process on the session's Mosquitto over SQLite databases seeded
before they start (a few hundred workflows in known shapes, each an hour or two old), and the
aggregator of the packaged definition reads them over HTTP.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import _fleet
from aggregator.metrics import Metrics
from contract import iso
from order_saga import SPECS
from order_saga.broker import MosquittoBroker
from participants.store import Store

from ..support import needs_promtool, serve_aggregator, some_participants

#: The seeded shapes: each participant's history (oldest first; its last entry is its state),
#: and the view's derived state and step.
SHAPES: dict[str, tuple[dict[str, list[str]], str, str | None]] = {
    "s1": ({"order": ["PENDING"]}, "IN_PROGRESS", "payment"),
    "s2": ({"order": ["PENDING"], "payment": ["AUTHORIZED"]}, "IN_PROGRESS", "inventory"),
    "s3": (
        {"order": ["PENDING"], "payment": ["AUTHORIZED"], "inventory": ["RESERVED"]},
        "IN_PROGRESS",
        "shipping",
    ),
    "s4": (
        {
            "order": ["PENDING"],
            "payment": ["AUTHORIZED"],
            "inventory": ["RESERVED"],
            "shipping": ["SCHEDULED"],
        },
        "IN_PROGRESS",
        "order",
    ),
    "s5": (
        {"order": ["PENDING", "CANCELLED"], "payment": ["AUTHORIZED"], "inventory": ["REJECTED"]},
        "COMPENSATING",
        "payment",
    ),
    "s6": ({"order": ["PENDING", "CANCELLED"], "payment": ["DECLINED"]}, "FAILED", None),
    "s7": ({"order": ["PENDING"], "payment": ["DECLINED"]}, "FAILED", "order"),
    "s8": (
        {
            "order": ["PENDING", "CONFIRMED"],
            "payment": ["AUTHORIZED"],
            "inventory": ["RESERVED"],
            "shipping": ["SCHEDULED"],
        },
        "COMPLETED",
        None,
    ),
}
PER_SHAPE = 40
#: Seconds between two seeded workflows' changes (the oldest two hours ago).
SPACING_S = 10.0


@dataclass(frozen=True)
class Seeded:
    """One seeded workflow: its id, shape and the time all its parts changed (POSIX seconds)."""

    workflow_id: str
    shape: str
    at: float

    @property
    def state(self) -> str:
        return SHAPES[self.shape][1]

    @property
    def step(self) -> str | None:
        return SHAPES[self.shape][2]


def seed(directory: Path, count_per_shape: int = PER_SHAPE) -> list[Seeded]:
    """The participants' databases (``{name}.sqlite3`` in ``directory``) with workflows of every
    shape, interleaved, oldest first; what was written."""
    base = time.time() - 2 * 3600
    shapes = list(SHAPES)
    seeded = [
        Seeded(f"fl-{i:04d}", shapes[i % len(shapes)], base + i * SPACING_S)
        for i in range(count_per_shape * len(shapes))
    ]
    for name in SPECS:
        path = directory / f"{name}.sqlite3"
        Store(path).close()  # the schema
        rows, history = [], []
        for wf in seeded:
            states = SHAPES[wf.shape][0].get(name)
            if not states:
                continue
            at = iso(datetime.fromtimestamp(wf.at, UTC))
            rows.append((wf.workflow_id, states[-1], len(states), at, "{}"))
            history += [(wf.workflow_id, v, s, at) for v, s in enumerate(states, 1)]
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.executemany("INSERT INTO workflows VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO history (workflow_id, version, state, at) VALUES (?, ?, ?, ?)", history
            )
    return seeded


@dataclass
class Fleet:
    url: str
    agg: Any
    seeded: list[Seeded]
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as r:
            return r.status, await r.json(content_type=None)

    async def walk(self, query: str) -> tuple[list[str], list[dict[str, Any]]]:
        """Every page of ``/workflows?{query}``, following ``next``: the ids in order, and the pages."""
        ids: list[str] = []
        pages: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(500):
            status, page = await self.get(f"/workflows?{query}{cursor}")
            assert status == 200, page
            pages.append(page)
            ids += [v["workflow_id"] for v in page["views"]]
            if page["next"] is None:
                return ids, pages
            cursor = f"&cursor={page['next']}"
        raise AssertionError("the cursor never ended")


@pytest.fixture
async def fleet(session_broker: MosquittoBroker, prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    """The seeded participants and an aggregator over them."""
    seeded = seed(tmp_path)
    async with (
        some_participants(session_broker, prefix, tmp_path, list(SPECS)) as urls,
        serve_aggregator(urls) as served,
        aiohttp.ClientSession() as http,
    ):
        yield Fleet(served.url, served.agg, seeded, http)


def expected(fleet: Fleet, states: set[str], step: str | None = None) -> list[str]:
    return [w.workflow_id for w in fleet.seeded if w.state in states and (step is None or w.step == step)]


async def test_a_cursor_walks_every_matching_workflow_exactly_once_oldest_first(fleet: Fleet) -> None:
    """state=IN_PROGRESS, 7 a page: every in-progress workflow once, in listing order, none other;
    each page at most 7 views, each view of a wanted state; the last page's next is null."""
    ids, pages = await fleet.walk("state=IN_PROGRESS&limit=7")
    assert ids == expected(fleet, {"IN_PROGRESS"})
    assert len(ids) == 4 * PER_SHAPE
    assert all(len(p["views"]) <= 7 and p["budget_exhausted"] is False for p in pages)
    assert {v["state"] for p in pages for v in p["views"]} == {"IN_PROGRESS"}
    # Only PENDING orders were listed (s7's too, a payment declined), not the cancelled ones.
    assert sum(p["scanned"] for p in pages) == 5 * PER_SHAPE
    assert all(v["stalled"] and v["stall"]["reason"] == "no_progress" for p in pages for v in p["views"])


async def test_several_states_a_step_and_times_filter_the_views(fleet: Fleet) -> None:
    """Two states (terminal FAILED ones the initiator still lists among them); a step; a time window."""
    ids, _ = await fleet.walk("state=COMPENSATING&state=FAILED&limit=13")
    assert sorted(ids) == sorted(expected(fleet, {"COMPENSATING", "FAILED"}))
    ids, _ = await fleet.walk("state=IN_PROGRESS&step=shipping&limit=100")
    assert ids == expected(fleet, {"IN_PROGRESS"}, step="shipping")
    middle = fleet.seeded[len(fleet.seeded) // 2].at
    start = fleet.seeded[len(fleet.seeded) // 4].at
    window = (
        f"updated_after={iso(datetime.fromtimestamp(start, UTC))}"
        f"&updated_before={iso(datetime.fromtimestamp(middle, UTC)).replace('Z', '%2B00:00')}"
    )
    ids, _ = await fleet.walk(f"state=IN_PROGRESS&limit=25&{window}")
    assert ids == [w.workflow_id for w in fleet.seeded if w.state == "IN_PROGRESS" and start < w.at < middle]
    assert ids  # the window holds some
    ids, _ = await fleet.walk("state=COMPLETED")  # over: the initiator does not list it
    assert ids == []


async def test_a_page_says_when_its_scan_budget_ended_it(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 30 listed workflows a page at most: a rare state's pages end on the budget with a cursor,
    and walking them all still finds every one exactly once."""
    monkeypatch.setattr(_fleet, "PAGE_BUDGET", 30)
    status, first = await fleet.get("/workflows?state=COMPENSATING&limit=10")
    assert status == 200
    listed = [w for w in fleet.seeded if w.state != "COMPLETED"][:30]  # PENDING and CANCELLED orders
    assert (first["budget_exhausted"], first["scanned"]) == (True, 30)
    assert [v["workflow_id"] for v in first["views"]] == [w.workflow_id for w in listed if w.shape == "s5"]
    assert first["next"] is not None
    ids, pages = await fleet.walk("state=COMPENSATING&limit=10")
    assert ids == expected(fleet, {"COMPENSATING"})
    assert sum(p["budget_exhausted"] for p in pages) >= 5


async def test_summary_counts_the_in_flight_workflows_by_state(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts against the seeded truth (completed ones are not in flight), complete; the stalled gauges
    follow a complete count; a smaller budget says the count is not complete."""
    status, summary = await fleet.get("/summary")
    assert status == 200
    truth = {"IN_PROGRESS": 4 * PER_SHAPE, "COMPENSATING": PER_SHAPE, "FAILED": 2 * PER_SHAPE}
    assert {s: n for s, n in summary["counts"].items() if n} == truth
    assert summary["counts"]["COMPLETED"] == 0
    assert (summary["scanned"], summary["complete"]) == (7 * PER_SHAPE, True)
    metrics = fleet.agg.metrics
    assert metrics.value("aggregator_stalled_workflows") == 6 * PER_SHAPE  # all but the terminal FAILED
    assert metrics.value("aggregator_stalled_workflows_by_reason", reason="no_progress") == 6 * PER_SHAPE
    assert metrics.value("aggregator_stalled_workflows_by_reason", reason="anomaly") == 0
    assert metrics.value("aggregator_stalls_raised_total", reason="no_progress") == 6 * PER_SHAPE

    recent = fleet.seeded[-PER_SHAPE].at  # the last PER_SHAPE workflows changed after it
    status, since = await fleet.get(f"/summary?updated_after={iso(datetime.fromtimestamp(recent, UTC))}")
    later = [w for w in fleet.seeded if w.at > recent and w.state != "COMPLETED"]
    assert sum(since["counts"].values()) == len(later) and since["complete"] is True

    monkeypatch.setattr(_fleet, "SUMMARY_BUDGET", 100)
    status, partial = await fleet.get("/summary")
    assert (status, partial["scanned"], partial["complete"]) == (200, 100, False)
    assert sum(partial["counts"].values()) == 100
    assert metrics.value("aggregator_stalled_workflows") == 6 * PER_SHAPE  # a partial count sets nothing


async def test_summary_is_its_own_path_and_workflows_summary_a_view(fleet: Fleet) -> None:
    """``summary`` is a valid workflow id: /workflows/summary is its view (404: nobody knows it)."""
    status, body = await fleet.get("/workflows/summary")
    assert (status, body["workflow_id"]) == (404, "summary")


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("state=IN_PROGRESS&limit=100000", "limit"),
        ("state=IN_PROGRESS&limit=0", "limit"),
        ("state=IN_PROGRESS&limit=-1", "limit"),
        ("state=IN_PROGRESS&limit=1e3", "limit"),
        ("state=IN_PROGRESS&limit=5&limit=6", "limit at most once"),
        ("state=IN_PROGRESS&cursor=garbage", "cursor"),
        ("state=IN_PROGRESS&cursor=" + "A" * 40, "cursor"),
        ("state=IN_PROGRESS&cursor=" + "%00" * 20, "cursor"),
        ("state=IN_PROGRESS&cursor=a&cursor=b", "cursor at most once"),
        ("state=NOPE", "unknown state 'NOPE'"),
        ("state=in_progress", "unknown state"),
        ("&".join(["state=IN_PROGRESS"] * 51), "at most 50"),
        ("state=IN_PROGRESS&step=nobody", "unknown step"),
        ("state=IN_PROGRESS&updated_before=yesterday", "updated_before"),
        ("state=IN_PROGRESS&updated_after=2026-13-45T00:00:00Z", "updated_after"),
        ("state=IN_PROGRESS&updated_before=" + "9" * 5000, "updated_before"),
        ("state=IN_PROGRESS&timeout_ms=10", "'timeout_ms'"),
        ("state=IN_PROGRESS&id=fl-0000", "not both"),
        ("step=order", "at least one state"),
        ("stalled=true&state=IN_PROGRESS", "'state'"),
    ],
)
async def test_hostile_query_strings_are_400_problems(fleet: Fleet, query: str, needle: str) -> None:
    """Each: a 400 problem saying what is wrong, never a 500 or a hang."""
    started = time.monotonic()
    async with fleet.http.get(f"{fleet.url}/workflows?{query}") as r:
        body = await r.json(content_type=None)
        assert (r.status, r.content_type) == (400, "application/problem+json"), body
    assert needle in body["detail"], body
    assert time.monotonic() - started < 2


async def test_a_changed_cursor_is_refused_and_an_unchanged_one_goes_on(fleet: Fleet) -> None:
    """A real cursor with one character changed, cut short, or from another definition: 400; as given: 200."""
    _, first = await fleet.get("/workflows?state=IN_PROGRESS&limit=5")
    cursor = first["next"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    other = _fleet.encode_cursor(
        _fleet.decode_cursor(cursor, _fleet.cursor_key(fleet.agg.definition)), b"k" * 32
    )
    for bad in (flipped, cursor[:-4], other):
        status, body = await fleet.get(f"/workflows?state=IN_PROGRESS&limit=5&cursor={bad}")
        assert status == 400 and "cursor" in body["detail"], body
    status, second = await fleet.get(f"/workflows?state=IN_PROGRESS&limit=5&cursor={cursor}")
    assert status == 200
    assert [v["workflow_id"] for v in second["views"]] == expected(fleet, {"IN_PROGRESS"})[5:10]


def change_order(directory: Path, workflow_id: str, state: str) -> None:
    """The order service's part of ``workflow_id`` moves to ``state`` now (its next version), as
    if an event had come: it moves to the end of the listing, or out of the states listed."""
    at = iso(datetime.now(UTC))
    with contextlib.closing(sqlite3.connect(directory / "order.sqlite3", timeout=5)) as db, db:
        (version,) = db.execute(
            "SELECT version FROM workflows WHERE workflow_id = ?", (workflow_id,)
        ).fetchone()
        db.execute(
            "UPDATE workflows SET state = ?, version = ?, updated_at = ? WHERE workflow_id = ?",
            (state, version + 1, at, workflow_id),
        )
        db.execute(
            "INSERT INTO history (workflow_id, version, state, at) VALUES (?, ?, ?, ?)",
            (workflow_id, version + 1, state, at),
        )


async def test_a_workflow_changing_while_pages_are_read_makes_none_other_skipped(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 a page, so that the first page ends inside the batch it viewed. While that page is built,
    the first workflow it returns leaves the states listed (its order is confirmed); between the
    first and second page, another one it returned leaves them too, and a third changes and stays
    (a new PENDING version). Walking the cursors still finds every unchanged in-progress workflow
    exactly once and in order (none is skipped); the one that stayed shows again at the end."""
    engine = fleet.agg._require_open().fleet
    read = engine._views
    changed: list[str] = []

    async def views(ids: Any) -> Any:
        found = await read(ids)
        if not changed:  # the first page's batch is viewed: now its first workflow leaves
            changed.append(ids[0])
            change_order(tmp_path, ids[0], "CONFIRMED")
        return found

    monkeypatch.setattr(engine, "_views", views)
    wanted = expected(fleet, {"IN_PROGRESS"})
    status, first = await fleet.get("/workflows?state=IN_PROGRESS&limit=7")
    assert status == 200
    returned = [v["workflow_id"] for v in first["views"]]
    assert returned == wanted[:7] and changed == [wanted[0]]
    assert first["scanned"] < 20 and first["next"] is not None  # it ended inside its batch
    change_order(tmp_path, returned[4], "CONFIRMED")
    change_order(tmp_path, returned[5], "PENDING")
    ids = list(returned)
    cursor = first["next"]
    for _ in range(100):
        status, page = await fleet.get(f"/workflows?state=IN_PROGRESS&limit=7&cursor={cursor}")
        assert status == 200, page
        ids += [v["workflow_id"] for v in page["views"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert [w for w in wanted if w not in ids] == []  # none skipped
    assert ids == [*wanted, returned[5]]


async def test_hostile_summary_queries_are_400_problems(fleet: Fleet) -> None:
    """An unknown parameter, a bad or repeated time: 400 problems."""
    for query in (
        "x=1",
        "updated_after=soon",
        "updated_after=2026-01-01T00:00:00Z&updated_after=2026-01-01T00:00:00Z",
    ):
        status, body = await fleet.get(f"/summary?{query}")
        assert status == 400, (query, body)


ALERTS = Path(__file__).resolve().parents[2] / "docs" / "howto" / "alerts.yml"


@needs_promtool
def test_the_example_alerting_rules_load_fire_on_sample_series_and_name_real_metrics() -> None:
    """``promtool check rules`` accepts docs/howto/alerts.yml, ``promtool test rules`` sees its alerts
    fire (and stay quiet) as written, and every aggregator series it names is one the aggregator serves."""
    for command in (["check", "rules", ALERTS.name], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            ["promtool", *command], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
    served = {family.name for family in Metrics().registry.collect()}  # counters without "_total"
    named = set(re.findall(r"\b(aggregator_[a-z_]+)", ALERTS.read_text()))
    assert named >= {"aggregator_stalled_workflows_by_reason", "aggregator_stalls_raised_total"}
    for name in named:
        assert name.removesuffix("_total") in served, name


async def test_a_cursor_past_everything_is_bounded_by_the_page_budget(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor made up to pass over everything the initiator lists (a last row far in the
    future): what the page passes over counts against its budget (30 here), so it ends there
    with a cursor, instead of listing the initiator to its end (none of it is scanned anew)."""
    monkeypatch.setattr(_fleet, "PAGE_BUDGET", 30)
    made_up = _fleet.encode_cursor(
        _fleet.Resume(None, ("9999-12-31T23:59:59Z", "zzz")), _fleet.cursor_key(fleet.agg.definition)
    )
    status, page = await fleet.get(f"/workflows?state=IN_PROGRESS&limit=5&cursor={made_up}")
    assert status == 200, page
    assert page["views"] == []
    assert (page["budget_exhausted"], page["scanned"]) == (True, 0)
    assert page["next"] is not None
