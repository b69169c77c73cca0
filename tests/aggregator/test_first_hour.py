"""A new user's first hour, on the real command lines: a broker that is not there, participants
that are not running, mistyped flags, configuration mistakes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from order_saga.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


async def _run(*argv: str, timeout: float = 30.0) -> tuple[int, str, str, float]:
    """``python -m ARGV`` run to its end: exit status, stdout, stderr, and how long it took."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


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
    assert len(attempts) >= 5, err  # it kept trying
    assert len(warnings) == 1, warnings
    assert warnings[0].endswith("(Connection refused); retrying in " + warnings[0].rsplit(" in ", 1)[1])
