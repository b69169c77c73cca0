"""The live servers the HTTP fuzz tests share, and what the fuzz tests sent, printed at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from order_saga.broker import MosquittoBroker

from ._live import LiveServers, live_servers
from ._stats import STATS


@pytest.fixture(scope="package")
def live(session_broker: MosquittoBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServers]:
    """Participants and aggregators served from a thread; a short deadline keeps ``min_version`` waits short."""
    prefix = f"fz{uuid.uuid4().hex[:10]}"
    with live_servers(
        session_broker.url, prefix, tmp_path_factory.mktemp("fuzz"), deadline_ms=300
    ) as servers:
        yield servers


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = STATS.lines()
    if lines:
        terminalreporter.section("fuzz")
        for line in lines:
            terminalreporter.write_line(line)
