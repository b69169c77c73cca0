"""The same saga under orchestration and under a front controller: every outcome, the views, a crash.

Real processes (``python -m participants …``), real SQLite, a real Mosquitto. The orchestrated participants run the very same domain handlers as
under choreography; only commands trigger them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aggregator import load_definition
from contract import BrokerURL, new_event
from order_saga import SAMPLES, SPECS, Order
from order_saga.broker import MosquittoBroker
from order_saga.coordination import ACTIONS, FLOW, ORCHESTRATOR_SPEC, orchestrated, start_workflow
from participants import ParticipantService

from ..support import ParticipantProcess, config, counts


@contextlib.asynccontextmanager
async def processes(
    flags: dict[str, tuple[str, ...]], broker: MosquittoBroker, prefix: str, tmp: Path
) -> AsyncIterator[dict[str, ParticipantProcess]]:
    """``python -m participants NAME FLAGS…`` for each name, real processes, ready; always stopped."""
    procs = {
        name: ParticipantProcess(
            name, broker=broker.url, prefix=prefix, db=tmp / f"{name}.sqlite3", extra=extra
        )
        for name, extra in flags.items()
    }
    try:
        async with aiohttp.ClientSession() as http:
            for proc in procs.values():
                proc.start()
            for proc in procs.values():
                await proc.wait_ready(http)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


ORCHESTRATED = {"orchestrator": (), **{name: ("--coordination", "orchestrated") for name in SPECS}}


async def place(http: aiohttp.ClientSession, url: str, outcome: str, order_id: str) -> str:
    async with http.post(f"{url}/orders", json=SAMPLES[outcome].body(order_id)) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["workflow_id"])


async def view(http: aiohttp.ClientSession, url: str, workflow_id: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/workflows/{workflow_id}") as r:
        return r.status, await r.json(content_type=None)


async def wait_views(
    http: aiohttp.ClientSession, url: str, expected: dict[str, str], timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Poll ``url``'s ``GET /workflows/{id}`` until each workflow shows its sample's state and parts."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(expected):
        for wf, outcome in expected.items():
            if wf in done:
                continue
            status, body = await view(http, url, wf)
            if status != 200:
                continue
            states = {n: p["state"] for n, p in body["parts"].items()}
            if body["state"] == SAMPLES[outcome].state and states == SAMPLES[outcome].parts:
                done[wf] = body
        if time.monotonic() > deadline:
            missing = {wf: (await view(http, url, wf))[1] for wf in expected if wf not in done}
            raise AssertionError(f"{len(missing)} workflows did not end as expected: {missing}")
        await asyncio.sleep(0.05)
    return done


async def participant_states(
    http: aiohttp.ClientSession, urls: dict[str, str], workflow_id: str
) -> dict[str, Any]:
    out = {}
    for name in SPECS:
        async with http.get(f"{urls[name]}/status/{workflow_id}") as r:
            out[name] = (await r.json())["state"] if r.status == 200 else None
    return out


def test_every_flow_step_is_an_action_a_participant_has() -> None:
    """FLOW and ACTIONS agree: each command goes to an action that exists, and each action is used."""
    commanded = {(p, a) for steps in FLOW.values() for p, a in steps} | {("order", "create")}
    declared = {(p, a) for p, actions in ACTIONS.items() for a in actions}
    assert commanded == declared
    for name, actions in ACTIONS.items():
        for action, event in actions.items():
            # The orchestrated handler is the choreography handler itself, not a copy.
            if event:
                assert (
                    orchestrated(SPECS[name]).handlers[f"command.{name}.{action}"]
                    is SPECS[name].handlers[event]
                )


@pytest.mark.slow
async def test_orchestrated_saga_reaches_every_outcome_and_the_orchestrator_shows_it(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    async with (
        processes(ORCHESTRATED, session_broker, prefix, tmp_path) as procs,
        aiohttp.ClientSession() as http,
    ):
        urls = {name: proc.url for name, proc in procs.items()}
        placed = {await place(http, urls["orchestrator"], o, f"orc-{o}"): o for o in SAMPLES}
        views = await wait_views(http, urls["orchestrator"], placed)
        for wf, outcome in placed.items():
            # Each participant's own store says the same as the orchestrator.
            assert await participant_states(http, urls, wf) == SAMPLES[outcome].parts
            body = views[wf]
            assert {p["source"] for p in body["parts"].values()} == {"store"}
            assert body["workflow"] == load_definition().name and body["complete"] is True
            assert body["stalled"] is False and body["anomalies"] == []
            # A terminal view: the order's last version is what the order service says.
            async with http.get(f"{urls['order']}/status/{wf}") as r:
                assert body["parts"]["order"]["version"] == (await r.json())["version"]
        # The orchestrator's own record is the workflow's overall state.
        async with http.get(f"{urls['orchestrator']}/status/orc-happy") as r:
            assert (await r.json())["state"] == "COMPLETED"
        # Re-posting the same order starts nothing new; a different body under that id is a conflict.
        assert await place(http, urls["orchestrator"], "happy", "orc-happy") == "orc-happy"
        async with http.post(
            f"{urls['orchestrator']}/orders", json=SAMPLES["declined"].body("orc-happy")
        ) as r:
            assert r.status == 409
        status, body = await view(http, urls["orchestrator"], "never-placed")
        assert status == 404 and body["status"] == 404
        status, body = await view(http, urls["orchestrator"], "bad%20id")
        assert status == 400
        # Under orchestration a participant applies commands only: each once.
        applied = {n: (await counts(http, urls[n]))["applied"] for n in SPECS}
    commands = {n: sum(1 for o in SAMPLES for _ in _commands_to(n, o)) for n in SPECS}
    assert applied == commands


def _commands_to(participant: str, outcome: str) -> list[str]:
    """The commands ``participant`` gets in an ``outcome`` saga: walk FLOW from the order's creation."""
    emitted = {
        "happy": ["order.created", "payment.authorized", "inventory.reserved", "shipping.scheduled", "order.confirmed"],
        "declined": ["order.created", "payment.declined", "order.cancelled"],
        "out-of-stock": ["order.created", "payment.authorized", "inventory.rejected", "payment.refunded", "order.cancelled"],
        "unshippable": [
            "order.created", "payment.authorized", "inventory.reserved", "shipping.failed",
            "inventory.released", "payment.refunded", "order.cancelled",
        ],
    }[outcome]  # fmt: skip
    sent = [("order", "create")] + [step for event in emitted for step in FLOW[event]]
    return [action for p, action in sent if p == participant]


@pytest.mark.slow
async def test_front_controller_keeps_the_whole_workflow(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    flags = {name: ("--front-controller",) if name == "order" else () for name in SPECS}
    async with processes(flags, session_broker, prefix, tmp_path) as procs, aiohttp.ClientSession() as http:
        urls = {name: proc.url for name, proc in procs.items()}
        placed = {await place(http, urls["order"], o, f"fc-{o}"): o for o in SAMPLES}
        views = await wait_views(http, urls["order"], placed)
        published = 0
        for wf, outcome in placed.items():
            assert await participant_states(http, urls, wf) == SAMPLES[outcome].parts
            assert {p["source"] for p in views[wf]["parts"].values()} == {"store"}
            for name in ("payment", "inventory", "shipping"):
                async with http.get(f"{urls[name]}/status/{wf}") as r:
                    status = await r.json() if r.status == 200 else None
                part = views[wf]["parts"][name]
                # The front controller's copy of each part is the owner's own, version for version.
                assert (part["state"], part["version"]) == (
                    (status["state"], status["version"]) if status else (None, None)
                )
                published += len(status["history"]) if status else 0
        # The choreography is unchanged: the others applied what a plain saga needs; the front
        # controller applied every event the others published, each once.
        applied = {n: (await counts(http, urls[n]))["applied"] for n in SPECS}
    assert {n: applied[n] for n in ("payment", "inventory", "shipping")} == {
        n: sum(SAMPLES[o].applied[n] for o in SAMPLES) for n in ("payment", "inventory", "shipping")
    }
    assert applied["order"] == published


@pytest.mark.slow
async def test_sigkilled_orchestrator_resumes_every_workflow_and_nothing_is_applied_twice(
    own_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """40 sagas through a real orchestrator process, SIGKILLed mid-load and restarted on its database."""
    outcomes = [list(SAMPLES)[i % len(SAMPLES)] for i in range(40)]
    async with (
        processes(ORCHESTRATED, own_broker, prefix, tmp_path) as procs,
        aiohttp.ClientSession() as http,
    ):
        orchestrator = procs["orchestrator"]
        placed = {}
        for i, outcome in enumerate(outcomes):
            placed[await place(http, orchestrator.url, outcome, f"crash-{i}")] = outcome
        orchestrator.kill()  # events of these sagas are in flight; some commands unsent
        with contextlib.closing(sqlite3.connect(tmp_path / "orchestrator.sqlite3")) as db:
            unfinished = db.execute(
                "SELECT count(*) FROM workflows WHERE state NOT IN ('COMPLETED', 'FAILED', 'COMPENSATED')"
            ).fetchone()[0]
        assert unfinished >= 1  # the crash did leave work to resume
        await asyncio.sleep(0.5)
        orchestrator.start()
        await orchestrator.wait_ready(http)
        await wait_views(http, orchestrator.url, placed, timeout=60)
        await asyncio.sleep(1.0)  # anything applied twice would have landed by now
        applied = {n: (await counts(http, procs[n].url))["applied"] for n in SPECS}
    with contextlib.closing(sqlite3.connect(tmp_path / "orchestrator.sqlite3")) as db:
        sent = dict(db.execute("SELECT topic, count(*) FROM outbox GROUP BY topic").fetchall())
    commanded = {n: sum(c for topic, c in sent.items() if topic.split("/")[2] == n) for n in SPECS}
    expected = {n: sum(len(_commands_to(n, o)) for o in outcomes) for n in SPECS}
    assert commanded == expected  # the orchestrator decided each step once, crash or not
    assert applied == expected  # and each participant applied each command once


def test_the_orchestrator_commands_once_per_version_of_a_part(tmp_path: Path) -> None:
    """A second event carrying a version already kept (another id, so the inbox lets it in)
    commands nothing again: each step is decided once."""
    service = ParticipantService(
        ORCHESTRATOR_SPEC, config=config(BrokerURL(host="127.0.0.1"), "t", tmp_path / "o.db")
    )
    try:
        order = Order.model_validate(SAMPLES["happy"].order)
        assert start_workflow(service, "w1", order)
        fields = order.model_dump(mode="json")
        for _ in range(2):
            event = new_event(
                source="payment",
                name="authorized",
                subject="w1",
                state="AUTHORIZED",
                version=1,
                domain=fields,
            )
            assert service.apply(event)  # applied (a new id), but...
        topics = service.store.read(
            lambda db: [t for (t,) in db.execute("SELECT topic FROM outbox ORDER BY seq")]
        )
    finally:
        service.store.close()
    assert topics == ["t/command/order/create", "t/command/inventory/reserve"]  # ...reserve asked once
