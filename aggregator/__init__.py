"""Workflow status aggregator for choreographed services.

``async with Aggregator(load_definition()) as agg: view = await agg.view("ord-42")`` asks every
participant concurrently and reconstructs the workflow; :func:`aggregator.web.create_app` serves
the same as an aiohttp application a gateway can mount.
"""

from .core import Aggregator, ReadOptions, check_workflow_id
from .definition import Definition, load_definition, parse_definition
from .errors import (
    AggregatorError,
    DefinitionError,
    InvalidWorkflowId,
    NoParticipantAnswered,
    PartFailure,
    TooManyWatchers,
    WorkflowNotFound,
)
from .view import Part, View

__all__ = [
    "Aggregator",
    "AggregatorError",
    "Definition",
    "DefinitionError",
    "InvalidWorkflowId",
    "NoParticipantAnswered",
    "Part",
    "PartFailure",
    "ReadOptions",
    "TooManyWatchers",
    "View",
    "WorkflowNotFound",
    "check_workflow_id",
    "load_definition",
    "parse_definition",
]
