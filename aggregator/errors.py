"""The aggregator's one base error and its subclasses (each carries its context)."""

from __future__ import annotations

from contract import WORKFLOW_ID_RULE

from .schema import FailureKind


class AggregatorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(AggregatorError):
    """A setting given to the aggregator (a broker URL, an option) is invalid; the message says why."""


class DefinitionError(ConfigError):
    """A workflow definition is invalid; the message names the file, the field and what was expected."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        where = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.field = field


class NotOpen(AggregatorError):
    """The aggregator is used outside its ``async with`` block (not entered yet, or closed)."""

    def __init__(self, state: str) -> None:
        hint = "enter it first: async with Aggregator(...) as agg" if state == "new" else "it was closed"
        super().__init__(f"the aggregator is not open ({hint})")
        self.state = state


class BadRequest(AggregatorError):
    """A request the aggregator's API does not accept (an unknown query parameter, a bad limit); the message says why."""


class BadReadOptions(BadRequest):
    """A read asked for freshness in a form the aggregator does not accept (a bad header or query)."""


class InvalidWorkflowId(AggregatorError):
    """A workflow id outside the contract's rule (``contract.WORKFLOW_ID_RULE``)."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow id {workflow_id[:140]!r} must match {WORKFLOW_ID_RULE}")
        self.workflow_id = workflow_id


class WorkflowNotFound(AggregatorError):
    """Every participant answered that it has no record of the workflow."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no participant has a record of workflow {workflow_id!r}")
        self.workflow_id = workflow_id


class NoParticipantAnswered(AggregatorError):
    """No participant answered and nothing was cached: there is no view to give."""

    def __init__(self, workflow_id: str, errors: dict[str, str]) -> None:
        detail = ", ".join(f"{p}: {e}" for p, e in errors.items())
        super().__init__(f"no participant answered for workflow {workflow_id!r} ({detail})")
        self.workflow_id = workflow_id
        self.errors = errors


class TooManyWatchers(AggregatorError):
    """The bound on concurrent watch streams is reached."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"too many watchers (limit {limit}); try again later")
        self.limit = limit


class PartFailure(AggregatorError):
    """Fetching one participant's part failed; :attr:`kind` is what the view reports."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        participant: str,
        workflow_id: str | None = None,
        answered: bool = False,
    ) -> None:
        super().__init__(f"{participant}: {kind}: {detail}")
        self.kind: FailureKind = kind
        self.detail = detail
        self.participant = participant
        self.workflow_id = workflow_id
        self.answered = answered
        """The participant answered, and its answer did not map (a mapping problem: its circuit
        stays closed, and the view shows :attr:`detail`)."""


class NoInitiator(AggregatorError):
    """Finding stalled workflows needs the definition's ``initiator``."""

    def __init__(self) -> None:
        super().__init__("the workflow definition names no initiator: stalled workflows cannot be listed")


class NotSupported(AggregatorError):
    """A participant read through a mapping has no such endpoint (the contract's listing or republish)."""

    def __init__(self, participant: str, what: str) -> None:
        super().__init__(
            f"{participant} is read through a mapping and has no {what} (the contract's status API "
            "has one: docs/mapping.md)"
        )
        self.participant = participant
        self.what = what


class JobNotFound(AggregatorError):
    """No redrive job has this id (never had, or it was dropped: jobs live in memory, bounded)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"no redrive job {job_id[:64]!r} (finished jobs are dropped oldest first; a restart forgets all)"
        )
        self.job_id = job_id


class TooManyScans(AggregatorError):
    """As many summaries (or fleet pages) are running as the HTTP API allows at once, and none
    ended within the short wait (:mod:`aggregator._scans`); :attr:`retry_after_s` says when to
    try again."""

    def __init__(self, what: str, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"{limit} {what} are running, the most at once on this aggregator: try again in {retry_after_s} s"
        )
        self.limit = limit
        self.retry_after_s = retry_after_s


class TooManyJobs(AggregatorError):
    """As many redrive jobs are running as are allowed at once."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} redrive jobs are running, the most at once: wait for one to end, or cancel one"
        )
        self.limit = limit
