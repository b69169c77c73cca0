"""The aggregator's errors as HTTP problems: the one table every route of its HTTP API answers from.

Routes raise the errors of :mod:`aggregator.errors`; the server's problem middleware (and any
other server built on the same table) answers with what :data:`PROBLEMS` says. Nothing here
knows a web framework.
"""

from __future__ import annotations

from contract import ErrorTable, Problem

from .errors import (
    BadReadOptions,
    BadRequest,
    InvalidWorkflowId,
    JobNotFound,
    NoInitiator,
    NoParticipantAnswered,
    NotOpen,
    NotSupported,
    PartFailure,
    TooManyJobs,
    TooManyScans,
    TooManyWatchers,
    WorkflowNotFound,
)

PROBLEMS = ErrorTable()
"""What answers each error a route of the aggregator's API may raise."""

PROBLEMS.add(BadRequest, lambda exc: Problem(400, str(exc)))
PROBLEMS.add(BadReadOptions, lambda exc: Problem(400, str(exc)))
PROBLEMS.add(InvalidWorkflowId, lambda exc: Problem(400, str(exc)))
PROBLEMS.add(NoInitiator, lambda exc: Problem(400, str(exc)))
PROBLEMS.add(
    WorkflowNotFound, lambda exc: Problem(404, str(exc), extensions={"workflow_id": exc.workflow_id})
)
PROBLEMS.add(
    NoParticipantAnswered,
    lambda exc: Problem(503, str(exc), extensions={"workflow_id": exc.workflow_id, "errors": exc.errors}),
)
# A participant a whole-fleet request depends on (the initiator's listing) could not be asked.
PROBLEMS.add(
    PartFailure,
    lambda exc: Problem(
        503,
        f"{exc.participant} could not be asked: {exc.kind}",
        extensions={"errors": {exc.participant: exc.kind}},
    ),
)
PROBLEMS.add(NotOpen, lambda exc: Problem(503, str(exc)))
PROBLEMS.add(NotSupported, lambda exc: Problem(501, str(exc), extensions={"participant": exc.participant}))
PROBLEMS.add(JobNotFound, lambda exc: Problem(404, str(exc), extensions={"job_id": exc.job_id[:64]}))
PROBLEMS.add(TooManyJobs, lambda exc: Problem(429, str(exc), headers={"Retry-After": "1"}))
PROBLEMS.add(
    TooManyScans, lambda exc: Problem(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
)
PROBLEMS.add(TooManyWatchers, lambda exc: Problem(503, str(exc), headers={"Retry-After": "1"}))


def status_for(exc: BaseException) -> int:
    """The HTTP status that answers ``exc`` (500 for an error the table does not know)."""
    known = PROBLEMS.problem_for(exc)
    return 500 if known is None else known.status
