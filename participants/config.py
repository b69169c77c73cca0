"""Run-time configuration of one participant instance (docs/design.md, "Participants command line", as a value)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contract import HEAD_TIMEOUT_S, BrokerURL

from .errors import ConfigError

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: A token must be sendable as-is in an HTTP header: visible ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")
#: The environment variable holding the inbound bearer token, unless ``--token-env`` names another.
DEFAULT_TOKEN_ENV = "PARTICIPANT_TOKEN"
#: How long a consumer's inbox remembers an applied event id (so a redelivery is dropped).
INBOX_RETENTION_S = 7 * 24 * 3600
#: How long published events stay in the outbox, to be republished, by default.
DEFAULT_OUTBOX_RETENTION_S = 3600.0


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
    token: str | None = field(default=None, repr=False)
    """Inbound bearer token: when set, every route but ``/healthz`` and ``/readyz`` needs
    ``Authorization: Bearer <token>``; ``None`` turns authentication off."""
    watermark_ms: int = 1000
    """How often (at most) the relay publishes a watermark while its outbox is empty; 0: never."""
    head_timeout_s: float = HEAD_TIMEOUT_S
    """A connection that sends no complete request head within this many seconds is closed; 0: no bound."""
    outbox_retention_s: float = DEFAULT_OUTBOX_RETENTION_S
    """How long events stay in the outbox after the broker acknowledged them (then they are
    pruned, within five minutes): ``POST /outbox/{id}/republish`` can only publish again what
    is still there, so this bounds how long a stalled workflow can be redriven. At most
    :data:`INBOX_RETENTION_S`, so that every consumer still knows a republished event's id."""

    def __post_init__(self) -> None:
        if self.token is not None and not _TOKEN.fullmatch(self.token):
            # Never echo the token itself.
            raise ConfigError("the bearer token must be non-empty visible ASCII without spaces")
        if not _PREFIX.match(self.prefix):
            raise ConfigError(f"prefix {self.prefix!r}: must match {_PREFIX.pattern} (one topic level)")
        if not (math.isfinite(self.outbox_retention_s) and 0 <= self.outbox_retention_s <= INBOX_RETENTION_S):
            raise ConfigError(
                f"outbox_retention_s {self.outbox_retention_s} is out of range 0-{INBOX_RETENTION_S}"
                " (consumers' inboxes forget event ids after that)"
            )
        if not (0 <= self.head_timeout_s <= 3600):  # NaN fails this too
            raise ConfigError(f"head_timeout_s {self.head_timeout_s} is out of range 0-3600")
        if not (0 <= self.watermark_ms <= 3_600_000):
            raise ConfigError(f"watermark_ms {self.watermark_ms} is out of range 0-3600000")
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"port {self.port} is out of range 0-65535")


def token_from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The inbound bearer token held by the environment variable ``name``; ``None`` if it is unset.

    A variable that is set but empty is an error rather than "auth off": an empty secret is far
    more likely a broken deployment than a wish to run unauthenticated.
    """
    if not name:
        raise ConfigError("--token-env needs the name of an environment variable")
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(
            f"--token-env {name}: the variable is set but empty; set it to a token, or unset it to turn auth off"
        )
    if not _TOKEN.fullmatch(value):
        raise ConfigError(f"--token-env {name}: the token must be visible ASCII without spaces")
    return value
