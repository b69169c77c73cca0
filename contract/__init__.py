"""The wire contract the participants and the aggregator share (docs/design.md, "Contract").

Events (CloudEvents 1.0 on ``{prefix}/{producer}/{event}``), the workflow-id rule, the
participant status body, problem details, the broker URL with its client factory and reconnect
loop, and the helpers every server and background task of the project uses. It depends on no
other package of the project; both sides depend on it.
"""

from .auth import bearer_matches, bearer_middleware, unauthorized
from .broker import BrokerURL
from .errors import BrokerUnreachable, ConfigError, ContractError, InvalidEvent
from .events import (
    COMMAND,
    MAX_EVENT_BYTES,
    ORCHESTRATOR,
    CloudEvent,
    EventData,
    command_type,
    deadletter_topic,
    event_type,
    new_event,
    new_traceparent,
    parse_event,
    topic_for,
)
from .ids import (
    PARTICIPANT_NAME_PATTERN,
    WORKFLOW_ID_CHARS,
    WORKFLOW_ID_PATTERN,
    WORKFLOW_ID_RULE,
    WorkflowId,
    age_s,
    epoch_s,
    is_valid_workflow_id,
    iso,
    utc_now,
)
from .problem import (
    PROBLEM_JSON,
    PROBLEM_SCHEMA,
    ErrorTable,
    Problem,
    problem,
    problem_middleware,
    problem_middleware_for,
)
from .query import given_once
from .reconnect import SubscriptionRefused, reach, stay_connected, subscribe
from .serving import (
    HEAD_TIMEOUT_S,
    KEEPALIVE_TIMEOUT_S,
    MAX_REQUEST_LINE,
    SHUTDOWN_GRACE_S,
    run,
    serve_app,
    wait_for_stop_signal,
)
from .status import (
    BATCH_READ,
    STATUS_READ,
    BatchBody,
    BatchRead,
    HistoryEntry,
    ListingBody,
    RepublishBody,
    StatusBody,
    StatusRead,
)
from .tasks import cancel_and_wait
from .watermark import Watermark, new_watermark, parse_watermark, watermark_topic

__all__ = [
    "BATCH_READ",
    "COMMAND",
    "HEAD_TIMEOUT_S",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_EVENT_BYTES",
    "MAX_REQUEST_LINE",
    "ORCHESTRATOR",
    "PARTICIPANT_NAME_PATTERN",
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "SHUTDOWN_GRACE_S",
    "STATUS_READ",
    "WORKFLOW_ID_CHARS",
    "WORKFLOW_ID_PATTERN",
    "WORKFLOW_ID_RULE",
    "BatchBody",
    "BatchRead",
    "BrokerURL",
    "BrokerUnreachable",
    "CloudEvent",
    "ConfigError",
    "ContractError",
    "ErrorTable",
    "EventData",
    "HistoryEntry",
    "InvalidEvent",
    "ListingBody",
    "Problem",
    "RepublishBody",
    "StatusBody",
    "StatusRead",
    "SubscriptionRefused",
    "Watermark",
    "WorkflowId",
    "age_s",
    "bearer_matches",
    "bearer_middleware",
    "cancel_and_wait",
    "command_type",
    "deadletter_topic",
    "epoch_s",
    "event_type",
    "given_once",
    "is_valid_workflow_id",
    "iso",
    "new_event",
    "new_traceparent",
    "new_watermark",
    "parse_event",
    "parse_watermark",
    "problem",
    "problem_middleware",
    "problem_middleware_for",
    "reach",
    "run",
    "serve_app",
    "stay_connected",
    "subscribe",
    "topic_for",
    "unauthorized",
    "utc_now",
    "wait_for_stop_signal",
    "watermark_topic",
]
