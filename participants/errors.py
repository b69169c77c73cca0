"""The participants package's one base error and its subclasses."""

from __future__ import annotations


class ParticipantError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ParticipantError):
    """A command-line option or setting is invalid; the message says which and why."""


class InvalidEvent(ParticipantError):
    """An MQTT payload is not a valid CloudEvent of a type this participant handles.

    Never fatal: the consumer dead-letters the payload with :attr:`reason` and acknowledges it.
    """

    def __init__(self, reason: str, *, topic: str = "") -> None:
        super().__init__(f"{topic}: {reason}" if topic else reason)
        self.reason = reason
        self.topic = topic


class OrderConflict(ParticipantError):
    """An ``order_id`` was posted again with a different body."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"order {workflow_id!r} exists with a different body")
        self.workflow_id = workflow_id
