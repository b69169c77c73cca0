"""An in-process MQTT broker (amqtt, the ``demo`` extra) for the demo where Mosquitto is not installed.

It keeps no state across restarts and drops unacknowledged QoS 1 messages, so the tests that
restart a broker use Mosquitto (:mod:`order_saga.broker`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

from contract import BrokerURL

from .broker import MosquittoBroker, free_port, mosquitto_binary


@contextlib.asynccontextmanager
async def local_broker(url: BrokerURL | None) -> AsyncIterator[BrokerURL]:
    """``url`` if given; else a private Mosquitto if installed, else an embedded amqtt broker."""
    if url is not None:
        yield url
    elif mosquitto_binary() is not None:
        async with MosquittoBroker() as mosquitto:
            yield mosquitto.url
    else:
        async with EmbeddedBroker() as embedded:
            yield embedded.url


class EmbeddedBroker:
    """An in-process amqtt broker on a free loopback port (demo fallback without Mosquitto)."""

    def __init__(self) -> None:
        self._broker: Any = None
        self.port = 0

    @property
    def url(self) -> BrokerURL:
        """Where clients connect."""
        return BrokerURL(host="127.0.0.1", port=self.port)

    async def __aenter__(self) -> Self:
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise RuntimeError(
                "no MQTT broker to start: install mosquitto (apt-get install -y mosquitto) "
                "or the demo extra (pip install 'saga-aggregator[demo]'), or pass --broker URL"
            ) from exc

        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        self.port = free_port()
        config = {
            "listeners": {"default": {"bind": f"127.0.0.1:{self.port}"}},
            # Not amqtt's anonymous plugin: it makes every session non-persistent.
            "plugins": {f"{__name__}._AllowAll": {}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()


def _allow_all_plugin() -> type:
    from amqtt.plugins.base import BaseAuthPlugin

    class AllowAll(BaseAuthPlugin):  # type: ignore[misc]
        """Accepts every client while keeping its session persistent."""

        async def authenticate(self, *, session: Any) -> bool:
            return True

    return AllowAll


def __getattr__(name: str) -> Any:
    # amqtt imports plugins by dotted path; build the class lazily so that importing this
    # module never imports amqtt.
    if name == "_AllowAll":
        return _allow_all_plugin()
    raise AttributeError(name)
