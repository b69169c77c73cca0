"""The participant's errors as HTTP problems: the one table its routes (and a spec's own) answer from.

Routes raise the errors of :mod:`participants.errors`; the app's problem middleware answers
with what :data:`PROBLEMS` says.
"""

from __future__ import annotations

from contract import ErrorTable, Problem

from .errors import BadRequest, Conflict, NoRecord, Unavailable, Unprocessable

PROBLEMS = ErrorTable()
"""What answers each error a participant's route may raise."""

PROBLEMS.add(BadRequest, lambda exc: Problem(400, str(exc), extensions=exc.extensions))
PROBLEMS.add(Unprocessable, lambda exc: Problem(422, str(exc), extensions=exc.extensions))
PROBLEMS.add(NoRecord, lambda exc: Problem(404, str(exc), extensions={"workflow_id": exc.workflow_id}))
PROBLEMS.add(Conflict, lambda exc: Problem(409, str(exc), extensions={"workflow_id": exc.workflow_id}))
PROBLEMS.add(Unavailable, lambda exc: Problem(503, str(exc), extensions=exc.extensions))
