"""Workflow status aggregator for choreographed services.

``async with Aggregator(load_definition()) as agg: view = await agg.view("ord-42")`` asks every
participant concurrently and reconstructs the workflow; :func:`aggregator.web.create_app` serves
the same as an aiohttp application a gateway can mount. The design is in docs/design.md.
"""

from ._reads import check_workflow_id
from ._transport import Transport, TransportError
from .core import Aggregator, Health, ParticipantHealth
from .definition import Definition, load_definition, parse_definition
from .errors import (
    AggregatorError,
    BadReadOptions,
    BadRequest,
    ConfigError,
    DefinitionError,
    InvalidWorkflowId,
    NoInitiator,
    NoParticipantAnswered,
    NotOpen,
    PartFailure,
    TooManyWatchers,
    WorkflowNotFound,
)
from .options import ReadOptions
from .view import Part, View

__all__ = [
    "Aggregator",
    "AggregatorError",
    "BadReadOptions",
    "BadRequest",
    "ConfigError",
    "Definition",
    "DefinitionError",
    "Health",
    "InvalidWorkflowId",
    "NoInitiator",
    "NoParticipantAnswered",
    "NotOpen",
    "Part",
    "PartFailure",
    "ParticipantHealth",
    "ReadOptions",
    "TooManyWatchers",
    "Transport",
    "TransportError",
    "View",
    "WorkflowNotFound",
    "check_workflow_id",
    "load_definition",
    "parse_definition",
]
