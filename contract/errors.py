"""The contract package's one base error and its subclasses."""

from __future__ import annotations


class ContractError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ContractError):
    """A setting (a broker URL, a prefix) is invalid; the message says which and why."""


class BrokerUnreachable(ContractError):
    """No node of a broker accepted a connection when asked once (the message names each and why).

    Not a configuration error (the URL parses; the broker may come up later): a program that
    cannot run without the broker says so in one line and exits 1.
    """


class InvalidEvent(ContractError):
    """An MQTT payload is not a valid saga event.

    Never fatal: a participant dead-letters the payload with :attr:`reason` and acknowledges
    it; the aggregator counts and drops it.
    """

    def __init__(self, reason: str, *, topic: str = "") -> None:
        super().__init__(f"{topic}: {reason}" if topic else reason)
        self.reason = reason
        self.topic = topic
