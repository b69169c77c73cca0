"""The participants package's one base error and its subclasses."""

from __future__ import annotations

from contract import errors as _contract


class ParticipantError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ParticipantError, _contract.ConfigError):
    """A command-line option or setting is invalid; the message says which and why.

    Also a :class:`contract.ConfigError`, so one ``except`` catches a bad broker URL too.
    """
