"""Fixtures of the trip booking tests: a private Mosquitto and the four services on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from order_saga.broker import MosquittoBroker

from ._stack import Trip, in_process


@pytest.fixture
async def services(own_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Trip]:
    """The four services in-process on port 0, subscribed to a Mosquitto of this test's own."""
    async with in_process(own_broker.url, tmp_path) as running:
        yield running
