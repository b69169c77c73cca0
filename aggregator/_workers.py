"""``serve --workers N``: N aggregator processes sharing one port (``SO_REUSEPORT``).

The parent is a small supervisor: it starts N ``serve`` processes with the same options (each
a whole aggregator: its own part store, its own event feed in ``events`` mode), waits until
every one has bound the port, prints one start-up line, and on SIGINT/SIGTERM stops them all
(each within its grace period). If a worker dies on its own, the others are stopped too and
the exit status says so: a half-served port is worse than a clearly stopped one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Sequence

from contract import SHUTDOWN_GRACE_S, wait_for_stop_signal

#: How long a worker may take to start (import, open, bind) before the start counts as failed.
START_TIMEOUT_S = 60.0


def _drop_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``--name VALUE`` / ``--name=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            out.append(arg)
    return out


def _reserve_port(host: str) -> socket.socket:
    """A socket bound (not listening) with SO_REUSEPORT on a free port, held while workers bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


async def supervise(serve_argv: Sequence[str], *, workers: int, host: str, port: int) -> int:
    """Run ``workers`` serve processes on one port until a signal; returns the exit status."""
    args = _drop_option(_drop_option(serve_argv, "--workers"), "--port")
    reserved = _reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = reserved.getsockname()[1]
    procs: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(workers):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "aggregator",
                    "serve",
                    *args,
                    "--port",
                    str(port),
                    "--reuse-port",
                    stdout=asyncio.subprocess.PIPE,
                    # Never written: a worker sees it close when the supervisor dies, however.
                    stdin=asyncio.subprocess.PIPE,
                )
            )
        lines = []
        for proc in procs:
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(START_TIMEOUT_S):
                    line = (await proc.stdout.readline()).decode().strip()
            except TimeoutError:
                line = ""
            if not line:
                print("aggregator: a worker did not start; stopping", file=sys.stderr)
                return 1
            lines.append(line)
        print(f"{lines[0].removesuffix(')')}; {workers} workers, one port)", flush=True)
        relays = [asyncio.ensure_future(_relay(proc)) for proc in procs]  # a full pipe would block one
        ended = [asyncio.ensure_future(proc.wait()) for proc in procs]
        stop = asyncio.ensure_future(wait_for_stop_signal())
        done, _ = await asyncio.wait([stop, *ended], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for relay in relays:
            relay.cancel()
        if stop not in done:
            print("aggregator: a worker stopped on its own; stopping the others", file=sys.stderr)
            return 1
        return 0
    finally:
        await _stop_all(procs)
        if reserved is not None:
            reserved.close()


async def _relay(proc: asyncio.subprocess.Process) -> None:
    """Copy what a worker prints after its start-up line to our standard output."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()


async def _stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            async with asyncio.timeout(SHUTDOWN_GRACE_S + 2):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def supervisor_gone() -> None:
    """In a worker: return once the supervisor is gone (its end of our stdin pipe closed).

    A supervisor that is SIGKILLed cannot stop its workers; this way they stop themselves
    instead of holding the port for ever.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
