"""The participants package's one base error and its subclasses."""

from __future__ import annotations

from contract import errors as _contract


class ParticipantError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ParticipantError, _contract.ConfigError):
    """A command-line option or setting is invalid; the message says which and why.

    Also a :class:`contract.ConfigError`, so one ``except`` catches a bad broker URL too.
    """


class BadRequest(ParticipantError):
    """A request a route refuses (a bad id, query or body): a 400; ``extensions`` go into the problem."""

    def __init__(self, detail: str, **extensions: object) -> None:
        super().__init__(detail)
        self.extensions = extensions


class Unprocessable(BadRequest):
    """A well-formed body that does not validate: a 422 listing the fields in ``errors``."""


class NoRecord(ParticipantError):
    """The participant has no record of the workflow: a 404."""

    def __init__(self, participant: str, workflow_id: str) -> None:
        super().__init__(f"{participant} has no record of workflow {workflow_id!r}")
        self.workflow_id = workflow_id


class Conflict(ParticipantError):
    """A request contradicts what the workflow already holds: a 409."""

    def __init__(self, detail: str, *, workflow_id: str) -> None:
        super().__init__(detail)
        self.workflow_id = workflow_id


class Unavailable(ParticipantError):
    """The participant cannot answer now (not ready, an injected failure): a 503."""

    def __init__(self, detail: str, **extensions: object) -> None:
        super().__init__(detail)
        self.extensions = extensions
