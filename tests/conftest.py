"""Fixtures: a real Mosquitto for the session (and private ones for restart tests)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from order_saga.broker import MosquittoBroker, NatsCluster, mosquitto_binary, nats_binary

from .support import Saga, in_process_saga

#: Fixtures that start a broker or need one: a test that uses any of them is marked ``broker``
#: (``pytest -m "not broker"`` runs the tests that need none).
BROKER_FIXTURES = frozenset({"session_broker", "own_broker", "nats_cluster", "saga", "live"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker: needs an MQTT broker (Mosquitto or a NATS cluster) it starts")


#: Fixtures that make a test slow whatever it does: a three-node cluster takes seconds to form,
#: and ``site`` (tests/test_docs.py) is the whole documentation site built by Sphinx.
SLOW_FIXTURES = frozenset({"nats_cluster", "site"})
#: Every test under these directories is slow: a benchmark run, even a quick one, takes many seconds.
SLOW_DIRS = (Path(__file__).parent / "benchmarks",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if BROKER_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.broker)
        if SLOW_FIXTURES.intersection(fixtures) or any(item.path.is_relative_to(d) for d in SLOW_DIRS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def session_broker() -> Iterator[MosquittoBroker]:
    """One Mosquitto shared by the tests that never stop it; each test uses its own prefix."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it)")
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def own_broker() -> Iterator[MosquittoBroker]:
    """A private Mosquitto this test may stop, kill and restart."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed: a broker restart needs it (amqtt keeps no state)")
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def prefix() -> str:
    """A topic prefix unique to the test, so tests sharing a broker never see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def saga(session_broker: MosquittoBroker, prefix: str, tmp_path: Path) -> AsyncIterator[Saga]:
    """The four participants in-process, connected to the session broker."""
    async with in_process_saga(session_broker.url, prefix, tmp_path) as running:
        yield running


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """A private 3-node NATS JetStream cluster with MQTT listeners; this test may kill its nodes."""
    if nats_binary() is None:
        pytest.skip("nats-server is not installed (.ci/run installs it)")
    with NatsCluster(3) as cluster:
        yield cluster
