"""Run-time configuration of one participant instance (the §4 command line, as a value)."""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiomqtt

from .errors import ConfigError
from .spec import Settings

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusFaults:
    """Injected delay and failure of the status endpoints (for benchmarks and fault tests)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    slow_rate: float = 0.0
    """Share of status requests delayed by a further ``slow_ms`` (a latency tail)."""
    slow_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "slow_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0 (got {value})")
        for name in ("error_rate", "slow_rate"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ConfigError(f"{name} must be between 0 and 1 (got {value})")


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantConfig:
    """Everything one participant instance needs to run."""

    host: str = "127.0.0.1"
    port: int = 0
    broker: BrokerURL = field(default_factory=lambda: BrokerURL(host="127.0.0.1"))
    prefix: str = "saga"
    db: Path | str = ":memory:"
    client_id: str | None = None
    """MQTT client id; by default one is made on first start and kept in the database, so the
    broker's persistent session follows the instance's data across restarts."""
    faults: StatusFaults = field(default_factory=StatusFaults)
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigError(f"prefix {self.prefix!r}: must match {_PREFIX.pattern} (one topic level)")
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port {self.port} is out of range 0-65535")
