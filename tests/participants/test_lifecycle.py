"""Closing a participant always completes, whatever its broker link is doing at that moment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from order_saga import SPECS
from order_saga.broker import MosquittoBroker
from participants import ParticipantService

from ..support import config, in_process_saga


@pytest.mark.slow
async def test_closing_while_events_flow_never_hangs(
    session_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """Thirty open/close cycles of payment under a stream of events each close within 5 s."""
    async with in_process_saga(session_broker.url, prefix, tmp_path / "saga") as saga:
        for i in range(30):
            svc = ParticipantService(
                SPECS["payment"], config=config(session_broker.url, prefix, tmp_path / f"p{i % 3}.sqlite3")
            )
            await svc.__aenter__()
            burst = asyncio.gather(*(saga.place("happy") for _ in range(5)))
            await asyncio.sleep(0.01 * (i % 5))
            async with asyncio.timeout(5):
                await svc.__aexit__(None, None, None)
            await burst
    assert svc.link.connected is False


@pytest.mark.slow
async def test_closing_while_the_broker_is_gone_never_hangs(
    own_broker: MosquittoBroker, prefix: str, tmp_path: Path
) -> None:
    """A participant whose broker vanished mid-session still closes promptly."""
    for i in range(10):
        svc = ParticipantService(
            SPECS["order"], config=config(own_broker.url, prefix, tmp_path / "o.sqlite3")
        )
        await svc.__aenter__()
        async with asyncio.timeout(5):
            await svc.wait_ready()
        if i % 2:
            own_broker.kill()
        else:
            own_broker.stop()
        await asyncio.sleep(0.01 * i)
        async with asyncio.timeout(5):
            await svc.__aexit__(None, None, None)
        own_broker.start()
