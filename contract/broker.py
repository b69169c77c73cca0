"""The MQTT broker as both sides reach it: its URL, the client factory and the reconnect loop.

aiomqtt 2.x does not reconnect by itself: a link is a fresh client entered in a loop. The loop
(:func:`stay_connected`) backs off with capped, jittered delays, and starts again quickly after
a link that stayed up a while, but keeps backing off when links keep dropping at once (another
client taking over the same client id, a broker refusing us).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import aiomqtt

from .errors import ConfigError

#: A link that stayed up this long resets the reconnect backoff.
STABLE_S = 5.0
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerURL:
    """An MQTT broker address parsed from ``mqtt://[user[:password]@]host[:port]``."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Parse a broker URL; raise :class:`ConfigError` saying what is wrong."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// (got {parts.scheme!r})")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: invalid port") from exc
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r}: missing host")
        if parts.path not in ("", "/"):
            raise ConfigError(f"broker URL {url!r}: unexpected path {parts.path!r}")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def client(self, *, identifier: str, clean_session: bool, timeout: float) -> aiomqtt.Client:
        """An aiomqtt client for this broker with Nagle's algorithm off.

        paho does not set TCP_NODELAY; without it, small PUBLISH/PUBACK packets wait for
        delayed ACKs (about 40 ms on Linux loopback) whenever one is already in flight.
        """
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            clean_session=clean_session,
            keepalive=10,
            timeout=timeout,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )


async def stay_connected(
    session: Callable[[], Awaitable[None]],
    *,
    broker: BrokerURL,
    who: str,
    log: logging.Logger,
    transient: tuple[type[Exception], ...] = (),
) -> NoReturn:
    """Run ``session`` (one broker link, start to end) again and again until cancelled.

    ``session`` ends by returning or by raising :class:`aiomqtt.MqttError` or one of
    ``transient`` (also inside an exception group); any of these is logged as a warning with
    the retry delay, then the link is made again after a capped, jittered backoff. Stopping is
    the caller's job: cancel the task (on Python 3.11 a cancellation may be turned into the
    link's ``MqttError`` by aiomqtt, so cancel until done, see :func:`contract.tasks.cancel_and_wait`).
    """
    loop = asyncio.get_running_loop()
    errors: tuple[type[Exception], ...] = (aiomqtt.MqttError, *transient)
    delay = _FIRST_DELAY_S
    while True:
        started = loop.time()
        reason = "session ended"
        try:
            await session()
        except* errors as group:
            reason = "; ".join(str(e) or type(e).__name__ for e in group.exceptions)
        if loop.time() - started >= STABLE_S:
            delay = _FIRST_DELAY_S  # the link was up a while: the first retry is quick
        pause = delay * random.uniform(0.5, 1.0)
        log.warning("%s: broker link to %s lost (%s); retrying in %.2fs", who, broker, reason, pause)
        await asyncio.sleep(pause)
        delay = min(delay * 2, _MAX_DELAY_S)
