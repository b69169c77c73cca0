"""Reading a mapped participant's answers and events into parts (the mapping is :mod:`aggregator.mapping`).

:class:`Mapper` holds one participant's compiled mapping and turns a parsed answer into a
record, a record into a :class:`Mapped` (state through the table, version, time, data), and an
event payload into a workflow id and a :class:`Mapped`. What does not map raises
:class:`MappingProblem`: ``unmapped_state`` for a raw state the table does not know,
``bad_response`` for anything of the wrong type or missing.

Order: a part that maps a version is ordered by it; one that maps only a time, by that time
(its :attr:`Part.version` holds the time in microseconds, which the store compares as it
compares versions, and the view shows as ``null``); one with neither is not ordered (version
0: each answer, newer by observation, replaces the last).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json

from contract import is_valid_workflow_id
from contract.ids import MAX_VERSION

from .definition import ParticipantDef
from .mapping import Expression, Search
from .schema import FailureKind
from .view import Order

#: Epoch numbers above this are milliseconds (1e11 s is in the year 5138; 1e11 ms in 1973).
_MS_ABOVE = 1e11
#: The largest ``data`` a part keeps, as JSON.
MAX_DATA_BYTES = 16 * 1024
_EMPTY: tuple[object, ...] = (None, [], {})

Values = tuple[str, int | None, str | None, float | None, dict[str, Any] | None, str]
"""A record read through the mapping: :class:`Mapped`'s fields, in its order, as a plain tuple
(reads turn it into a part directly: no object in between)."""


class MappingProblem(Exception):
    """What an answer or an event does not have that the mapping asks for."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Mapped:
    """One record, read through the mapping."""

    state: str
    version: int | None
    updated_at: str | None
    """The mapped time as RFC 3339 UTC (the part's ``updated_at``)."""
    epoch: float | None
    """The same time, in seconds since the epoch."""
    data: dict[str, Any] | None
    raw_state: str

    def order_key(self, order: Order) -> int:
        """The part's ``version`` in the store: the version, the time in microseconds, or 0."""
        return order_key(order, self.version, self.epoch)


def order_key(order: Order, version: int | None, epoch: float | None) -> int:
    """A part's ``version`` in the store (:meth:`Mapped.order_key`, from a record's values)."""
    if order == "version":
        return version or 0
    if order == "time":
        return int((epoch or 0.0) * 1_000_000)
    return 0


def parse_json(body: bytes) -> Any:
    """A JSON document (UTF-8; NaN and Infinity refused, as JSON itself refuses them; nested at
    most 200 deep); ``bad_response`` if not. pydantic-core's parser: a fifth of ``json.loads``' cost."""
    try:
        return from_json(body, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:
        raise MappingProblem("bad_response", f"not JSON: {str(exc).splitlines()[0][:160]}") from None


def _where(expression: Expression) -> str:
    return repr(expression.text[:80])


class Mapper:
    """One participant's mapping, applied (see the module docstring)."""

    def __init__(self, spec: ParticipantDef) -> None:
        status = spec.status
        if status is None:
            raise ValueError("a Mapper needs a status mapping")
        self.status = status
        self.batch = spec.batch
        self.events = spec.events
        self._record: Search | None = status.record.search if status.record is not None else None
        self._table = status.states
        self._declared = frozenset(spec.states) if spec.states is not None else None
        self.order: Order = "version" if status.version else "time" if status.time else "none"
        self._status_fields = (status.state, status.version, status.time, status.data)
        self._data_bound = _bounded_up_to(status.data)
        """Answers up to this size (bytes) bound their data: it needs no measuring."""
        if spec.events is not None:
            e = spec.events
            self._event_fields = (e.state, e.version, e.time, None)

    def record(self, doc: Any) -> Any | None:
        """The record in a parsed answer; None when there is none (null, ``[]`` or ``{}``)."""
        found = self._record(doc) if self._record is not None else doc
        return None if found in _EMPTY else found

    def read(self, record: Any, *, size: int | None = None) -> Mapped:
        """A record's state, version, time and data (:class:`MappingProblem` if they do not map).

        ``size``: the bytes of the answer it came from, if known (bounds the size of its data).
        """
        return Mapped(*self._read(record, self._status_fields, size))

    def values(self, record: Any, *, size: int | None = None) -> Values:
        """What :meth:`read` gives, as a tuple (for reads that make a part of it at once)."""
        return self._read(record, self._status_fields, size)

    def batch_values(self, doc: Any, wanted: set[str], *, size: int | None = None) -> dict[str, Values]:
        """The records of a parsed batch answer for the ``wanted`` ids, the first of each id, read
        as :meth:`values` reads one (the whole answer fails on the first that does not map).

        The data of records the answer's size does not bound is measured together, in one
        writing out of all of them, and one at a time only when together they are over the
        bound: the problem raised is the one reading them in order would raise first.
        """
        batch = self.batch
        assert batch is not None
        records = batch.records.search(doc)
        if records is None:
            return {}
        if type(records) is not list:
            raise MappingProblem(
                "bad_response",
                f"records {_where(batch.records)} gave a {type(records).__name__}, not a list",
            )
        found: dict[str, Values] = {}
        unmeasured: list[dict[str, Any]] = []
        id_of, fields, read, data_at = batch.id.search, self._status_fields, self._read, self.status.data
        try:
            for record in records:
                workflow_id = id_of(record)
                if type(workflow_id) is str and workflow_id in wanted and workflow_id not in found:
                    found[workflow_id] = read(record, fields, size, unmeasured)
        except MappingProblem:
            if unmeasured and data_at is not None:  # an earlier record's data over the bound came first
                _measure_each(unmeasured, data_at)
            raise
        if unmeasured and data_at is not None:
            _measure_all(unmeasured, data_at)
        return found

    def event(self, payload: Any) -> tuple[str, Mapped]:
        """An event payload's workflow id and record (:class:`MappingProblem` if they do not map)."""
        assert self.events is not None
        workflow_id = self.events.workflow_id.search(payload)
        if not isinstance(workflow_id, str) or not is_valid_workflow_id(workflow_id):
            shown = repr(workflow_id)[:80] if workflow_id is not None else "nothing"
            raise MappingProblem(
                "bad_response",
                f"workflow_id {_where(self.events.workflow_id)} gave {shown}, not a workflow id",
            )
        return workflow_id, Mapped(*self._read(payload, self._event_fields, None))

    def problems(self, record: Any) -> list[MappingProblem]:
        """Every problem of a record, not only the first (for ``check-participant``)."""
        state_at, version_at, time_at, data_at = self._status_fields
        found = []
        for read, where in (
            (self._state, state_at),
            (_version, version_at),
            (_time, time_at),
            (_data, data_at),
        ):
            if where is None:
                continue
            try:
                read(where.search(record), where)
            except MappingProblem as problem:
                found.append(problem)
        return found

    def _read(
        self,
        record: Any,
        fields: tuple[Expression, Expression | None, Expression | None, Expression | None],
        size: int | None,
        unmeasured: list[dict[str, Any]] | None = None,
    ) -> Values:
        """``unmeasured``: where to leave data that needs measuring, instead of measuring it now."""
        state_at, version_at, time_at, data_at = fields
        state, text = self._state(state_at.search(record), state_at)
        version = _version(version_at.search(record), version_at) if version_at is not None else None
        updated_at = epoch = None
        if time_at is not None:
            updated_at, epoch = _time(time_at.search(record), time_at)
        data = None
        if data_at is not None:
            small = size is not None and size <= self._data_bound
            data = _data(data_at.search(record), data_at, small, unmeasured)
        return state, version, updated_at, epoch, data, text

    def _state(self, raw: Any, where: Expression) -> tuple[str, str]:
        """The declared state of a raw one, and the raw one as text."""
        if type(raw) is str:
            text = raw
        elif type(raw) is int or type(raw) is float:
            text = str(raw)
        else:
            shown = "nothing" if raw is None else f"a {type(raw).__name__}"
            raise MappingProblem(
                "bad_response", f"state {_where(where)} gave {shown}, not a string or a number"
            )
        table = self._table
        if table is not None:
            state = table.get(text)
            if state is None:
                raise MappingProblem(
                    "unmapped_state",
                    f"state {text[:64]!r} is not in the states table (known: {sorted(table)[:20]})",
                )
            return state, text
        if self._declared is not None and text not in self._declared:
            raise MappingProblem(
                "unmapped_state",
                f"state {text[:64]!r} is not one of the declared states {sorted(self._declared)[:20]}",
            )
        if not 1 <= len(text) <= 64:
            raise MappingProblem("unmapped_state", f"state {text[:64]!r} is not 1 to 64 characters")
        return text, text


def _version(value: Any, where: Expression) -> int:
    if type(value) is not int or not 0 <= value <= MAX_VERSION:
        raise MappingProblem(
            "bad_response",
            f"version {_where(where)} gave {repr(value)[:40]}, not an integer from 0 to 2^63-1",
        )
    return value


def _data(
    value: Any, where: Expression, small: bool = False, unmeasured: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """``value`` if it is an object within the bound (``small``: the answer's size bounds it, see
    :func:`_bounded_up_to`); left in ``unmeasured`` (when given) if only writing it out can tell."""
    if value is None:
        return None
    if type(value) is not dict:
        raise MappingProblem(
            "bad_response", f"data {_where(where)} gave a {type(value).__name__}, not an object"
        )
    if not small:
        if unmeasured is not None:
            unmeasured.append(value)
        else:
            _measure_each([value], where)
    return value


def _bounded_up_to(where: Expression | None) -> int:
    """The largest answer, in bytes, whose size alone keeps what ``where`` selects in it within
    :data:`MAX_DATA_BYTES` as JSON (-1: none does).

    What the expression selects is made of at most ``copies`` parts of the answer (each at most
    6 times longer written back: non-ASCII escaped) and of its own text: an answer of ``size``
    bytes bounds it when ``6 * (max(copies, 1) * size + len(text)) <= MAX_DATA_BYTES``, which
    for whole numbers is ``size <= (MAX_DATA_BYTES // 6 - len(text)) // max(copies, 1)``.
    """
    if where is None or where.copies is None:
        return -1
    return (MAX_DATA_BYTES // 6 - len(where.text)) // max(where.copies, 1)


def _measure_each(values: list[dict[str, Any]], where: Expression) -> None:
    """A problem for the first of ``values`` over :data:`MAX_DATA_BYTES` written as JSON."""
    for value in values:
        if len(json.dumps(value)) > MAX_DATA_BYTES:
            raise MappingProblem("bad_response", f"data {_where(where)} is over {MAX_DATA_BYTES} bytes")


def _measure_all(values: list[dict[str, Any]], where: Expression) -> None:
    """What :func:`_measure_each` says, from one writing out of all of ``values`` when that is
    within the bound: each one is then shorter still (``[a, b]`` is ``a`` and ``b`` and more)."""
    if len(json.dumps(values)) > MAX_DATA_BYTES:
        _measure_each(values, where)


_SECONDS: dict[int, str] = {}
"""Whole seconds since the epoch already formatted (a few: the times of one moment's answers)."""


def _iso_seconds(seconds: float) -> str:
    """Seconds since the epoch as ``iso`` writes them, the date and time of day formatted once per
    second (what ``contract.utc_now`` does for the clock)."""
    whole = math.floor(seconds)
    micros = round((seconds - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    text = _SECONDS.get(whole)
    if text is None:
        if len(_SECONDS) >= 256:
            _SECONDS.clear()
        text = _SECONDS[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    # As {micros:06d} writes it (0 <= micros < 10**6), in half the time.
    return f"{text}.{str(micros).zfill(6)}Z"


#: A time already in the form views carry (``iso``): used as it is. ASCII digits only, which is
#: all ``datetime.fromisoformat`` reads (and a quarter cheaper to match than every digit).
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII).fullmatch


#: Looked up once: the attribute of the class costs as much again as the call.
_fromisoformat = datetime.fromisoformat


def _time(value: Any, where: Expression) -> tuple[str, float]:
    """RFC 3339 UTC text and epoch seconds of a mapped time (a string, or seconds or milliseconds)."""
    kind = type(value)
    if kind is str:
        if _CANONICAL(value):  # the common form: no reformatting
            try:  # Python >= 3.11 reads the Z itself (UTC, as +00:00 is)
                return value, _fromisoformat(value).timestamp()
            except ValueError:
                pass  # a month 13, a day 32: said below
        try:
            moment = _fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise MappingProblem(
                "bad_response", f"time {_where(where)} gave {value[:40]!r}, not RFC 3339"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    elif kind is int or kind is float:
        seconds = value / 1000 if value > _MS_ABOVE else float(value)
        if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # before year 10000
            raise MappingProblem("bad_response", f"time {_where(where)} gave {value!r}, out of range")
        return _iso_seconds(seconds), seconds
    else:
        shown = "nothing" if value is None else f"a {kind.__name__}"
        raise MappingProblem("bad_response", f"time {_where(where)} gave {shown}, not a time")
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return text, seconds
