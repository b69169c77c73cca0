"""A new user's first hour, on the real command lines: a broker that is not there, participants
that are not running, mistyped flags, configuration mistakes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from order_saga.broker import free_port

from ..support import foreign_server, run_python

ROOT = Path(__file__).resolve().parents[2]


async def _run(*argv: str, timeout: float = 30.0) -> tuple[int, str, str, float]:
    """``python -m ARGV`` run to its end: exit status, stdout, stderr, and how long it took."""
    started = time.monotonic()
    status, out, err = await run_python("-m", *argv, timeout=timeout, merged=False, cwd=ROOT)
    return status, out, err, time.monotonic() - started


async def _run_for(seconds: float, *argv: str) -> str:
    """``python -m ARGV`` for ``seconds``, then SIGINT: what it wrote to stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        await asyncio.sleep(seconds)
        assert proc.returncode is None, "it stopped by itself"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return err.decode()


@pytest.mark.parametrize(
    ("broker", "reason"),
    [
        ("mqtt://127.0.0.1:{port}", "(Connection refused)"),
        ("mqtt://no-such-host.invalid:1883", "no-such-host.invalid:1883 ("),
        ("mqtt://127.0.0.1:{port},127.0.0.1:{port2}", "cannot connect to any node of the broker"),
    ],
    ids=["refused", "unresolvable", "cluster"],
)
@pytest.mark.slow
async def test_demo_with_a_broker_that_is_not_there_says_so_in_one_line_within_seconds(
    broker: str, reason: str
) -> None:
    """No reconnect warnings for a minute: one line naming the broker and why, exit 1, in seconds."""
    url = broker.format(port=free_port(), port2=free_port())
    status, out, err, took = await _run("aggregator", "demo", "--once", "--broker", url)
    assert status == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aggregator: demo failed: cannot connect to "), lines[0]
    assert reason in lines[0] and "leave out --broker" in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert took < 10, took


@pytest.mark.slow
async def test_a_participant_without_its_broker_warns_once_per_step_not_per_try(tmp_path: Path) -> None:
    """Nothing listens at the broker's address: the retries go on (DEBUG lines, several a second
    at first) but only the first failure is a WARNING within the first warning step (10 s)."""
    port = free_port()
    err = await _run_for(
        4.0,
        "participants", "order", "--port", str(free_port()), "--broker", f"mqtt://127.0.0.1:{port}",
        "--db", str(tmp_path / "order.sqlite3"), "--log-level", "DEBUG",
    )  # fmt: skip
    attempts = [line for line in err.splitlines() if f"cannot connect to mqtt://127.0.0.1:{port}" in line]
    warnings = [line for line in attempts if " WARNING " in line]
    assert len(attempts) >= 3, err  # it kept trying
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith("(Connection refused); retrying in " + warnings[0].rsplit(" in ", 1)[1])


@contextlib.asynccontextmanager
async def _serving(*args: str) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``python -m aggregator serve ARGS --port P`` once its start line is out; always stopped."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "serve", *args, "--port", str(port),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("aggregator: serving "), line
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def _readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.slow
async def test_serve_warns_by_name_about_participants_it_cannot_reach_and_readyz_says_unreachable() -> None:
    """Two participants not running, two answering: within seconds one WARNING for each missing
    one, naming it and its URL, and /readyz shows them ``unreachable`` (200, degraded)."""

    async def alive(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    dead = {"payment": free_port(), "shipping": free_port()}
    async with (
        foreign_server(alive) as order,
        foreign_server(alive) as inventory,
        aiohttp.ClientSession() as http,
    ):
        args = [
            "--participant", f"order={order}", "--participant", f"inventory={inventory}",
            *(a for name, port in dead.items() for a in ("--participant", f"{name}=http://127.0.0.1:{port}")),
        ]  # fmt: skip
        async with _serving(*args) as (url, proc):
            async with asyncio.timeout(10):
                while "unknown" in (ready := (await _readyz(http, url))[1])["participants"].values():
                    await asyncio.sleep(0.05)
            status, ready = await _readyz(http, url)
            proc.terminate()
            _, err = await proc.communicate()
    assert status == 200
    assert ready["participants"] == {
        "order": "ok", "payment": "unreachable", "inventory": "ok", "shipping": "unreachable",
    }  # fmt: skip
    assert ready["status"] == "degraded" and "unreachable: payment, shipping" in ready["detail"]
    warnings = [line for line in err.decode().splitlines() if " WARNING " in line]
    assert len(warnings) == 2, warnings
    for (name, port), line in zip(dead.items(), warnings, strict=True):
        assert f"participant {name} (http://127.0.0.1:{port}) cannot be reached: " in line, line
        assert "Connection refused" in line


@pytest.mark.slow
async def test_readyz_after_every_read_got_503_does_not_say_ok() -> None:
    """Participants alive (their /healthz answers) but every status read gets 503: right after
    one read, each is ``unreachable`` and /readyz is degraded, still 200 (the aggregator is open)."""

    async def busy(request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.json_response({"status": "ok"})
        return web.Response(status=503, text="busy")

    async with foreign_server(busy) as base, aiohttp.ClientSession() as http:
        args = [
            a
            for name in ("order", "payment", "inventory", "shipping")
            for a in ("--participant", f"{name}={base}")
        ]
        async with _serving(*args) as (url, _):
            async with asyncio.timeout(10):
                while set((await _readyz(http, url))[1]["participants"].values()) != {"ok"}:
                    await asyncio.sleep(0.05)  # probed: each answered
            async with http.get(f"{url}/workflows/ord-1") as r:
                assert r.status == 503
            status, ready = await _readyz(http, url)
    assert status == 200
    assert set(ready["participants"].values()) == {"unreachable"}, ready
    assert ready["status"] == "degraded"


@pytest.mark.parametrize(
    ("argv", "usage", "hint"),
    [
        (["aggregator", "demo", "--prot", "8000"], "usage: python -m aggregator demo ", "(did you mean --port?)"),
        (["aggregator", "serve", "--partcipant", "order=x:1"], "usage: python -m aggregator serve ", "(did you mean --participant?)"),
        (["aggregator", "get", "ord-1", "--jsn"], "usage: python -m aggregator get ", "(did you mean --json?)"),
        (["aggregator", "demo", "--freshness", "tl"], "usage: python -m aggregator demo ", "(did you mean ttl?)"),
        (["aggregator", "serv"], "usage: python -m aggregator ", "(did you mean serve?)"),
        (["participants", "order", "--prot", "1"], "usage: python -m participants ", "(did you mean --port?)"),
        (["participants", "ordr"], "usage: python -m participants ", "(did you mean order?)"),
        (["aggregator", "serve", "--bogus"], "usage: python -m aggregator serve ", ""),
    ],
    ids=["demo-flag", "serve-flag", "get-flag", "demo-choice", "subcommand", "participant-flag", "participant-name", "no-match"],
)  # fmt: skip
@pytest.mark.slow
async def test_a_usage_error_shows_the_subcommands_usage_and_the_closest_match(
    argv: list[str], usage: str, hint: str
) -> None:
    """A mistyped flag, value or subcommand: exit 2, the usage of the command that was meant (not
    the top-level one's), and the closest name when one is close; none when none is."""
    status, out, err, _ = await _run(*argv)
    assert status == 2 and out == ""
    assert err.startswith(usage), err
    last = err.strip().splitlines()[-1]
    assert last.startswith(usage.removeprefix("usage: ").strip() + ": error: "), last
    if hint:
        assert last.endswith(hint), last
    else:
        assert "did you mean" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["aggregator", "serve"],
        ["aggregator", "demo"],
        ["participants", "order", "--db", "{tmp}/order.sqlite3"],
    ],
    ids=["serve", "demo", "participant"],
)
@pytest.mark.slow
async def test_a_port_in_use_is_one_line_with_the_option_to_change_and_exit_2(
    argv: list[str], tmp_path: Path
) -> None:
    """Port taken: a configuration error like any other: one line naming the address once and
    ``--port``, exit 2, no traceback (and the demo says it before starting anything)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [a.format(tmp=tmp_path) for a in argv]
        status, out, err, took = await _run(*args, "--port", str(port))
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].endswith(
        f"cannot serve on 127.0.0.1:{port}: address already in use (pick a free port with --port)"
    ), lines[0]
    assert lines[0].count(str(port)) == 1
    if argv[1] == "demo":
        assert took < 5 and out == ""  # no broker, no participants started for nothing


@pytest.mark.slow
async def test_a_port_out_of_range_is_a_usage_error() -> None:
    """``--port 70000`` is refused (it once served on 70000 mod 65536)."""
    status, _, err, _ = await _run("aggregator", "serve", "--port", "70000")
    assert status == 2
    assert err.strip().splitlines()[-1] == (
        "python -m aggregator serve: error: argument --port: 70000 is out of range 0-65535"
    )


@pytest.mark.slow
async def test_demo_once_says_it_ignores_port_and_links_no_page_that_will_be_gone() -> None:
    """``demo --once --port P``: one line on stderr that --port is ignored; nothing served at P;
    no status-page link printed (the server stops with the script); exit 0."""
    port = free_port()
    status, out, err, _ = await _run("aggregator", "demo", "--once", "--port", str(port), timeout=60)
    assert status == 0, (out, err)
    assert "aggregator: demo --once ignores --port" in err
    assert "/ui/" not in out and "status page" not in out and f":{port}" not in out
    assert "ok   happy" in out
    # Every sample ends in a terminal state: no view names a step (it would name whoever moved last).
    assert out.count("  state     ") == 4 and "step:" not in out, out


@pytest.mark.slow
async def test_every_url_option_takes_host_port_as_well_as_a_url() -> None:
    """``serve --participant order=localhost:P`` and ``=127.0.0.1:P`` work as ``get --url
    127.0.0.1:P`` does: the same forms everywhere (the participant is asked there)."""
    asked: list[str] = []

    async def participant(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path == "/healthz":
            return web.json_response({"status": "ok"})
        return web.json_response({"type": "about:blank", "title": "Not Found", "status": 404}, status=404)

    async with foreign_server(participant) as base, aiohttp.ClientSession() as http:
        port = base.rsplit(":", 1)[1]
        for form in (f"localhost:{port}", f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/"):
            asked.clear()
            async with _serving("--participant", f"order={form}") as (url, _):
                async with asyncio.timeout(10):
                    while (await _readyz(http, url))[1]["participants"]["order"] == "unknown":
                        await asyncio.sleep(0.05)
                assert (await _readyz(http, url))[1]["participants"]["order"] == "ok", form
                status, out, err, _ = await _run(
                    "aggregator", "get", "ord-1", "--url", url.removeprefix("http://")
                )
            assert "/healthz" in asked and "/status/ord-1" in asked, (form, asked)
            assert status != 2 and "ord-1" in out + err, (out, err)


def _walk(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _walk(subparser, f"{name} {sub}")
        elif action.help != argparse.SUPPRESS:
            yield name, action


def test_every_option_of_every_command_has_help() -> None:
    """Every option and argument of the aggregator's and the participants' command lines says what it is."""
    from aggregator.__main__ import build_parser
    from order_saga.cli import CATALOG
    from participants.cli import build_parser as participant_parser

    parsers = [("aggregator", build_parser())] + [
        (f"participants {name}", participant_parser(CATALOG, CATALOG.specs.get(name)))
        for name in CATALOG.ports
    ]
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for where, parser in parsers
        for name, action in _walk(parser, where)
        if not (action.help or "").strip()
    ]
    assert missing == []


@pytest.mark.slow
async def test_terminal_views_have_no_step_and_the_stalled_listing_no_empty_not_found() -> None:
    """Over HTTP from ``serve``: a finished workflow's view has ``step: null`` (one in flight keeps
    its step), and ``GET /workflows?stalled=true`` is ``{"views": [...]}`` without an empty
    ``not_found`` (the batch keeps its ``not_found``: there it means something)."""
    states = {"order": "CONFIRMED", "payment": "AUTHORIZED", "inventory": "RESERVED", "shipping": "SCHEDULED"}

    def participant(name: str) -> Any:
        def record(workflow_id: str) -> dict[str, Any] | None:
            state = states[name] if workflow_id == "done" else "PENDING" if name == "order" else None
            if state is None or workflow_id == "nobody":
                return None
            at = "2026-01-01T00:00:00Z"
            return {
                "participant": name, "workflow_id": workflow_id, "state": state, "version": 1,
                "updated_at": at, "history": [{"state": state, "version": 1, "at": at}], "data": {},
            }  # fmt: skip

        async def handle(request: web.Request) -> web.Response:
            if request.path == "/healthz":
                return web.json_response({"status": "ok"})
            if request.path == "/status" and "state" in request.query:  # the initiator's listing
                return web.json_response({"statuses": [], "next": None})
            if request.path == "/status":  # the batch endpoint
                ids = request.query.getall("workflow_id", [])
                found = {w: record(w) for w in ids}
                return web.json_response(
                    {
                        "statuses": [r for r in found.values() if r],
                        "missing": [w for w, r in found.items() if not r],
                    }
                )
            body = record(request.path.rsplit("/", 1)[1])
            if body is None:
                problem = {"type": "about:blank", "title": "Not Found", "status": 404}
                return web.json_response(problem, status=404, content_type="application/problem+json")
            return web.json_response(body)

        return handle

    async with contextlib.AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(foreign_server(participant(name))) for name in states}
        http = await stack.enter_async_context(aiohttp.ClientSession())
        args = [a for name, url in urls.items() for a in ("--participant", f"{name}={url}")]
        url, _ = await stack.enter_async_context(_serving(*args))
        async with http.get(f"{url}/workflows/done") as r:
            done = await r.json()
        async with http.get(f"{url}/workflows/going") as r:
            going = await r.json()
        async with http.get(f"{url}/workflows?stalled=true") as r:
            assert r.status == 200
            stalled = await r.json()
        async with http.get(f"{url}/workflows?id=done&id=nobody") as r:
            batch = await r.json()
    assert (done["state"], done["step"]) == ("COMPLETED", None)
    assert going["state"] == "IN_PROGRESS" and going["step"] is not None
    assert stalled == {"views": []}
    assert batch["not_found"] == ["nobody"] and [v["step"] for v in batch["views"]] == [None]
