"""Memory stays bounded under oversized requests, on the real servers (the aggregator and a participant)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from ..support import server_process

#: What 250 oversized requests may add to a server's resident memory.
BOUND_MB = 50
_CHUNK = b"A" * (1 << 20)


def rss_mb(pid: int) -> float:
    """The process' resident memory, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def oversized(port: int, *, header: bool) -> None:
    """One request with a 64 MiB request line (or header), sent until the server hangs up."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " if header else b"GET /")
        for _ in range(64):
            s.sendall(_CHUNK)
        s.sendall(b"\r\n\r\n" if header else b" HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(100)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "argv",
    [("aggregator", "serve"), ("participants", "payment", "--broker", "mqtt://127.0.0.1:1", "--db", "DB")],
    ids=["aggregator", "participant"],
)
@pytest.mark.slow
async def test_oversized_requests_leave_memory_where_it_was(argv: tuple[str, ...], tmp_path: Path) -> None:
    """200 requests with 64 MiB lines or headers one after another, then 50 at once: the server's
    resident memory ends within 50 MB of where it started (it grew by about 15 MB per request)."""
    argv = tuple(str(tmp_path / "p.sqlite3") if a == "DB" else a for a in argv)
    with server_process(*argv) as (url, proc):
        port = int(url.rsplit(":", 1)[1])
        await asyncio.sleep(0.5)
        before = rss_mb(proc.pid)
        for i in range(200):
            await asyncio.to_thread(oversized, port, header=i % 2 == 1)
        await asyncio.gather(*(asyncio.to_thread(oversized, port, header=i % 2 == 1) for i in range(50)))
        await asyncio.sleep(1.5)  # the collection after refused requests runs at most once a second
        grown = rss_mb(proc.pid) - before
        assert proc.poll() is None
        assert grown < BOUND_MB, f"resident memory grew by {grown:.0f} MB"
