"""Command-line defects found from outside: run as real processes, as a user would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from order_saga import SAMPLES
from order_saga.broker import free_port

from ..support import Saga, cli, foreign_server

ROOT = Path(__file__).resolve().parents[2]


async def _serve(
    *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str, str]:
    """``python -m aggregator serve ARGS`` on a free port; returns the process, its URL and start-up line."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "serve", *args, "--port", str(port),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = (await proc.stdout.readline()).decode()
    return proc, f"http://127.0.0.1:{port}", line


def _participants(saga: Saga) -> list[str]:
    return [arg for name, url in saga.urls.items() for arg in ("--participant", f"{name}={url}")]


@pytest.mark.slow
async def test_an_empty_token_refuses_to_start_and_the_start_line_says_whether_auth_is_on(
    saga: Saga, tmp_path: Path
) -> None:
    """AGGREGATOR_TOKEN="" or a token_env naming an empty variable: exit 2, one line, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("AGGREGATOR_TOKEN", "AGG_CLI_TOKEN")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "serve", "--port", str(free_port()),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**env, "AGGREGATOR_TOKEN": ""},
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert (
        out.decode().strip() == "aggregator: AGGREGATOR_TOKEN is set but empty: give it a token, or unset it"
    )
    config = tmp_path / "wf.toml"
    packaged = (ROOT / "aggregator" / "order_saga.toml").read_text()
    config.write_text(packaged + '\n[auth]\ntoken_env = "AGG_CLI_TOKEN"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggregator", "serve", "--config", str(config), "--port", str(free_port()),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**env, "AGG_CLI_TOKEN": ""},
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert "token_env names $AGG_CLI_TOKEN, which is empty" in out.decode()
    assert "Traceback" not in out.decode()

    for token, shown in ((None, "auth: off"), ("s3cret", "auth: bearer token")):
        extra = {"AGGREGATOR_TOKEN": token} if token else {}
        proc, url, line = await _serve(*_participants(saga), env={**env, **extra})
        try:
            assert shown in line
            assert "s3cret" not in line
            async with aiohttp.ClientSession() as http, http.get(f"{url}/workflows/x") as r:
                assert r.status == (401 if token else 404)
        finally:
            proc.terminate()
            await proc.wait()


@pytest.mark.slow
async def test_a_participant_url_with_credentials_is_refused_without_printing_them() -> None:
    """``--participant payment=http://u:secret@host`` exits 2 and never prints the password."""
    code, out = await cli("serve", "--participant", "payment=http://u:hunter2@127.0.0.1:8002")
    assert code == 2
    assert "credentials in the URL are not supported" in out
    assert "hunter2" not in out
    assert "usage:" not in out


@pytest.mark.slow
async def test_sigterm_with_a_watch_stream_open_stops_at_once(saga: Saga) -> None:
    """A watch stream open: SIGTERM ends it and the process exits within the grace period, status 0."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    proc, url, _ = await _serve(*_participants(saga))
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/workflows/{wf}/watch") as r:
            assert r.status == 200
            first = await r.content.readuntil(b"\n\n")
            assert b"event: view" in first
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(r.content.read(), timeout=10)
            async with asyncio.timeout(10):
                await proc.wait()
            took = time.monotonic() - started
        assert b"event: view" not in rest  # the stream ended; nothing new was sent
        assert proc.returncode == 0
        assert took < 6.0  # the grace period is 5 s; before, this took two minutes
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_a_second_ctrl_c_stops_at_once(saga: Saga) -> None:
    """Two SIGINTs in a row: the process exits without waiting for the grace period."""
    proc, _, _ = await _serve(*_participants(saga))
    try:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await proc.wait()
        # 130: the second one cancelled the shutdown; 0: the first had finished it; -SIGINT: the
        # second came after the event loop had closed (and given SIGINT back to the system).
        assert proc.returncode in (0, 130, -signal.SIGINT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.broker  # the demo starts its own
@pytest.mark.slow
async def test_demo_on_a_taken_port_says_so_in_one_line() -> None:
    """``demo --port P`` with P taken: a configuration error (exit 2), one line naming the address
    once and the option to change, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = await cli("demo", "--port", str(port))
    assert code == 2
    assert out.strip() == (
        f"aggregator: demo: cannot serve on 127.0.0.1:{port}: address already in use (pick a free port with --port)"
    )


@pytest.mark.slow
async def test_a_quick_benchmark_never_writes_the_committed_results() -> None:
    """``--quick`` into benchmarks/results is refused; the help names where quick runs go."""
    results = ROOT / "benchmarks" / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks", "latency", "--quick", "--out", str(results),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert "never overwrites the committed results" in out.decode()
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == before
    code, help_text = await _cli_module("benchmarks", "--help")
    assert code == 0
    assert "temporary directory for --quick" in " ".join(help_text.split())


async def _cli_module(module: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.slow
async def test_get_messages_read_right(saga: Saga) -> None:
    """``--url host:port`` works; an empty 404 says "HTTP 404 Not Found", not "None"."""
    wf = await saga.place("happy")
    await saga.wait_states(wf, SAMPLES["happy"].parts)
    proc, url, _ = await _serve(*_participants(saga))
    try:
        code, out = await cli("get", wf, "--url", url.removeprefix("http://"))
        assert code == 0, out
        assert "COMPLETED" in out
    finally:
        proc.terminate()
        await proc.wait()

    async def empty_404(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    async with foreign_server(empty_404) as bare:
        code, out = await cli("get", "ord-1", "--url", bare)
    assert code == 1
    assert out.strip() == "ord-1: HTTP 404 Not Found"


@pytest.mark.slow
async def test_a_bad_definition_reads_as_a_sentence(tmp_path: Path) -> None:
    """A definition error prints one line: no usage text, no pydantic prefixes."""
    bad = tmp_path / "wf.toml"
    bad.write_text(
        'name = "x"\n[participants.a]\nurl = "http://127.0.0.1:1"\nstates = ["A"]\n'
        '[[rules]]\nwhen = { a = "B" }\nstate = "S"\n'
    )
    code, out = await cli("serve", "--config", str(bad))
    assert code == 2
    assert out.strip() == f"aggregator: {bad}: rules[0] names state 'B' of a, which declares ['A']"
