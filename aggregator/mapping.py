"""Mappings: how to read a participant that does not speak the contract's status API.

A participant of the definition may carry a ``status`` mapping (and, optionally, ``batch`` and
``events``): a request template for its own REST API, JMESPath expressions that find the record,
its state, version, time and data in the answer, a table from its raw state values to the
declared states, and what "no record" looks like. Without one, the contract's status body is
read exactly as before (docs/mapping.md has every key, with an example).

Every expression is compiled when the definition loads, so a bad one is a load error naming its
key. Expressions that only walk fields and indexes (``items[0]``, ``data.attributes.status``,
most of them) are turned into a direct walk of the parsed JSON, equivalent to JMESPath's own
evaluation and a tenth of its cost; anything else runs through the ``jmespath`` package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Annotated, Any

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
)

from .errors import DefinitionError

Search = Callable[[Any], Any]
"""A compiled expression: the value it selects in a parsed JSON document (None where nothing is)."""

_Step = str | int


class Expression:
    """A JMESPath expression, compiled once: :attr:`search` evaluates it on parsed JSON."""

    __slots__ = ("copies", "search", "steps", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            parsed = jmespath.compile(text)
        except JMESPathError as exc:
            raise ValueError(f"not a JMESPath expression ({_first_line(exc)}): {text[:200]!r}") from None
        tree = dict(parsed.parsed)
        self.steps: tuple[_Step, ...] | None = _steps(tree)
        """The fields and indexes the expression walks, when that is all it does."""
        self.copies: int | None = _copies(tree)
        """At most how many copies of parts of a document the result holds (a walk: 1; None:
        unknown, when functions are involved): bounds its size by the document's."""
        search = _walker(self.steps) if self.steps is not None else _object_of_walks(tree)
        self.search: Search = search if search is not None else _total(parsed.search)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _total(search: Search) -> Search:
    """``search`` that selects nothing (null) where JMESPath would raise: a function given a
    value of the wrong type (``length(@)`` of a number) is a document that does not map, never
    an exception in the middle of a read or of the event feed."""

    def total(doc: Any) -> Any:
        try:
            return search(doc)
        except (JMESPathError, TypeError, ValueError):
            return None

    return total


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def _steps(node: dict[str, Any]) -> tuple[_Step, ...] | None:
    """The walk a parsed expression does, if it is made only of fields, indexes and ``@``."""
    kind = node.get("type")
    if kind == "field":
        return (node["value"],)
    if kind in ("identity", "current"):
        return ()
    if kind == "index":
        return (node["value"],)
    if kind in ("subexpression", "index_expression"):
        found: tuple[_Step, ...] = ()
        for child in node["children"]:
            steps = _steps(child)
            if steps is None:
                return None
            found += steps
        return found
    return None


def _object_of_walks(node: dict[str, Any]) -> Search | None:
    """``{key: walk, …}`` as a direct build of the object (null on a null document, as JMESPath)."""
    if node.get("type") != "multi_select_dict":
        return None
    walks = []
    for pair in node["children"]:
        steps = _steps(pair["children"][0])
        if steps is None:
            return None
        walks.append((pair["value"], _walker(steps)))
    if len(walks) == 1:  # the most common (``{amount: amount}``): no comprehension, half the cost
        [(key, walk)] = walks
        return lambda doc: None if doc is None else {key: walk(doc)}
    return lambda doc: None if doc is None else {key: walk(doc) for key, walk in walks}


def _copies(node: dict[str, Any]) -> int | None:
    """How many (possibly overlapping) parts of the document an expression's result can hold."""
    kind = node.get("type")
    if kind in ("function_expression", "expref"):
        return None  # to_string, join, …: a result may be larger than its inputs
    if kind in ("literal", "raw_string", "index"):
        return 0
    children = [c for c in node.get("children", []) if isinstance(c, dict)]
    counted = [_copies(child) for child in children]
    if any(c is None for c in counted):
        return None
    own = 1 if kind in ("field", "current", "identity") else 0
    return own + sum(c for c in counted if c is not None)


def _walker(steps: tuple[_Step, ...]) -> Search:
    """JMESPath's evaluation of a walk: a field of anything but an object, or an index of anything
    but an array (or past its end), is null, and so is everything after it."""
    if len(steps) == 1 and isinstance(steps[0], str):  # the most common: one field
        key = steps[0]
        return lambda doc: doc.get(key) if type(doc) is dict else None

    def walk(doc: Any) -> Any:
        for step in steps:
            if type(step) is str:
                if type(doc) is not dict:
                    return None
                doc = doc.get(step)
            else:
                if type(doc) is not list:
                    return None
                try:
                    doc = doc[step]  # type: ignore[index]
                except IndexError:
                    return None
        return doc

    return walk


def _compile(value: object) -> Expression:
    if isinstance(value, Expression):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a JMESPath expression (a non-empty string)")
    if len(value) > 1000:
        raise ValueError("a JMESPath expression here is at most 1000 characters")
    return Expression(value)


Expr = Annotated[
    Expression,
    PlainValidator(_compile),
    PlainSerializer(lambda e: e.text, return_type=str),
    WithJsonSchema({"type": "string", "description": "A JMESPath expression"}),
]
"""A JMESPath expression as a definition field: compiled when it loads, written back as text."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


_State = Annotated[str, Field(min_length=1, max_length=64)]
_RawState = Annotated[str, Field(min_length=1, max_length=256)]
_HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")]
_HeaderValue = Annotated[str, Field(max_length=8192, pattern=r"^[^\r\n\x00]*$")]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}")
#: Headers the aggregator sets itself on every participant call.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _template(value: str, placeholder: str) -> str:
    """A path template: starts with ``/``, holds ``placeholder`` and no other ``{…}``."""
    if not value.startswith("/"):
        raise ValueError(f"must start with '/' (it is appended to the participant's url): {value[:100]!r}")
    if re.search(r"[\s#]", value):
        raise ValueError("may not contain whitespace or '#'")
    if placeholder not in value:
        raise ValueError(
            f"must contain {placeholder}, where the workflow id{'s go' if placeholder == '{ids}' else ' goes'}"
        )
    others = set(re.findall(r"\{[^}]*\}?", value)) - {placeholder}
    if others:
        raise ValueError(f"only {placeholder} may appear in braces, not {sorted(others)[0]!r}")
    return value


class StatusMapping(_Model):
    """How to ask for one workflow's part, and how to read the answer."""

    path: Annotated[str, Field(max_length=2048)]
    """``GET``, appended to the participant's url; ``{id}`` is the workflow id, URL-quoted."""
    headers: dict[_HeaderName, _HeaderValue] = Field(default_factory=dict)
    """Sent with every call; ``${NAME}`` in a value is taken from the environment."""
    record: Expr | None = None
    """The record in the answer (default: the whole answer); null, ``[]`` or ``{}`` there: no record."""
    state: Expr
    """The raw state on the record (a string or a number)."""
    version: Expr | None = None
    """An integer >= 0 on the record; without one, parts are ordered by ``time``, or not at all."""
    time: Expr | None = None
    """When the record last changed: RFC 3339, or seconds since the epoch (milliseconds above 1e11)."""
    data: Expr | None = None
    """An object shown as the part's ``data``."""
    not_found: Annotated[list[Annotated[int, Field(ge=200, le=599)]], Field(min_length=1, max_length=20)] = [
        404
    ]
    """HTTP statuses that mean "no record"."""
    states: dict[_RawState, _State] | None = None
    """Raw state value (compared as a string) → declared state; without it, raw values are used as they are."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _template(value, "{id}")

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by the aggregator itself")
        return value

    def request_headers(self, where: str) -> dict[str, str]:
        """The headers with ``${NAME}`` taken from the environment now (:class:`DefinitionError` if unset)."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise DefinitionError(f"{where}.headers names ${{{name}}}, which is not set")
            found = os.environ[name]
            if re.search(r"[\r\n\x00]", found):
                raise DefinitionError(f"{where}.headers: ${{{name}}} holds a line break or NUL")
            return found

        return {name: _ENV.sub(value, raw) for name, raw in self.headers.items()}


class BatchMapping(_Model):
    """How to ask for many workflows' parts in one call (optional)."""

    path: Annotated[str, Field(max_length=2048)]
    """``GET``, appended to the url; ``{ids}`` is the ids, each URL-quoted, joined by ``join``."""
    join: Annotated[str, Field(min_length=1, max_length=8)] = ","
    max_ids: Annotated[int, Field(ge=1, le=1000)] = 100
    """Ids per call at most (more go out in several calls)."""
    records: Expr
    """The list of records in the answer."""
    id: Expr
    """Each record's workflow id (ids asked for and absent from the answer: no record)."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _template(value, "{ids}")


_TOPIC_LEVEL = re.compile(r"[^+#\x00]*|\+|#")


def _topic_filter(value: str) -> str:
    if not value or len(value.encode()) > 65535:
        raise ValueError("an MQTT topic filter is 1 to 65535 bytes")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if not _TOPIC_LEVEL.fullmatch(level) or (level == "#" and i != len(levels) - 1):
            raise ValueError(
                f"{value[:100]!r} is not an MQTT topic filter ('+' and '#' take a whole level, '#' only the last)"
            )
    if value.startswith("$"):
        raise ValueError("topics starting with '$' are the broker's own")
    return value


class EventMapping(_Model):
    """How the participant's own events (any JSON, on its own topics) become parts (``events`` mode)."""

    topic: Annotated[str, PlainValidator(_topic_filter), WithJsonSchema({"type": "string"})]
    """An MQTT topic filter, subscribed to as written (not under the prefix)."""
    workflow_id: Expr
    state: Expr
    """Mapped through the status mapping's ``states`` table."""
    version: Expr | None = None
    time: Expr | None = None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT filter (``+`` one level, ``#`` the rest)."""
    wanted, levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(wanted):
        if level == "#":
            return not (i == 0 and topic.startswith("$"))
        if i >= len(levels):
            return False
        if level == "+":
            if i == 0 and levels[0].startswith("$"):
                return False
            continue
        if level != levels[i]:
            return False
    return len(levels) == len(wanted)
