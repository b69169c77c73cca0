"""The reconstructed view of one workflow, and how it is derived from its parts.

Staleness is measured from the moment each part was *asked for* (or its event was produced):
a participant's answer reflects its state at some instant after the request left, so
``now - observed`` bounds how far behind that part can be. ``staleness_ms`` is the largest
such bound over the parts the view shows, rounded up: it may overstate, never understate.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from contract import epoch_s, iso

from .definition import Definition, Rule
from .schema import AnomalyBody, FailureKind, PartBody, Source, StallBody, StallReason, ViewBody

Order = Literal["version", "time", "none"]


@dataclass(frozen=True, slots=True)
class Part:
    """One participant's part of a workflow, as the aggregator knows it."""

    participant: str
    state: str | None
    """``None``: the participant has no record (it answered 404), or it could not be reached."""
    version: int
    """0 when there is no record."""
    updated_at: str | None
    observed: float
    """``time.monotonic()`` when this observation began (request sent, or event produced)."""
    observed_at: str
    """The same instant as wall-clock RFC 3339, for people."""
    source: Source
    latency_ms: float | None = None
    error: FailureKind | None = None
    history: tuple[str, ...] = ()
    """States the part went through (oldest first), when known; for ordering checks."""
    received: float | None = None
    """For a part taken from an event: ``time.monotonic()`` when the event arrived here."""
    order: Order = "version"
    """What orders this part's observations: its ``version`` (the contract's, or a mapped one);
    a mapped ``time`` (then ``version`` holds it in microseconds, and the view shows null); or
    nothing (``none``: version 0, each newer observation replaces the last)."""
    detail: str | None = None
    """Why a mapped part could not be read (with its ``error``)."""
    data: dict[str, Any] | None = None
    """A mapped part's ``data``."""

    @property
    def learnt(self) -> float:
        """``time.monotonic()`` when this aggregator learnt the part: its event's arrival, or the
        request's start (an event's ``observed`` is its production, which may be earlier)."""
        return self.observed if self.received is None else self.received

    @property
    def answered(self) -> bool:
        """Whether this part carries knowledge (a state, or a definite "no record")."""
        return self.source != "none"

    def age_ms(self, now: float, known_at: float | None = None) -> float:
        """How far behind the participant this part may be, at monotonic time ``now``.

        ``known_at`` (a watermark) may say the part was still current later than observed.
        """
        since = self.observed if known_at is None else max(self.observed, known_at)
        return max(0.0, (now - since) * 1000)

    def served_as(
        self, source: Source, *, error: FailureKind | None = None, detail: str | None = None
    ) -> Part:
        """The same knowledge, labelled with how this request got it."""
        if (
            source == self.source
            and error == self.error
            and detail == self.detail
            and (source == "live" or self.latency_ms is None)
        ):
            return self  # already labelled so (the common cache-hit case): no copy
        # The constructor, not dataclasses.replace: this runs on hot paths, and is 3x cheaper.
        return Part(
            self.participant,
            self.state,
            self.version,
            self.updated_at,
            self.observed,
            self.observed_at,
            source,
            None if source != "live" else self.latency_ms,
            error,
            self.history,
            self.received,
            self.order,
            detail,
            self.data,
        )

    def to_json(self) -> PartBody:
        """The JSON form of a part (docs/design.md, "Aggregator HTTP API")."""
        body: PartBody = {
            "state": self.state,
            "version": self.version if self.state is not None and self.order == "version" else None,
            "updated_at": self.updated_at,
            "observed_at": self.observed_at if self.answered else None,
            "source": self.source,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "error": self.error,
        }
        if self.order == "none":  # a mapped part with neither version nor time
            body["ordered"] = False
        if self.data is not None:
            body["data"] = self.data
        if self.detail is not None:
            body["detail"] = self.detail
        return body


def missing_part(
    participant: str, error: FailureKind, *, latency_ms: float | None = None, detail: str | None = None
) -> Part:
    """A part the aggregator could not get and has no copy of."""
    now = time.monotonic()
    return Part(
        participant, None, 0, None, now, "", "none", latency_ms=latency_ms, error=error, detail=detail
    )


#: 9999-12-31T23:59:59Z, the last second a ``datetime`` holds.
_LAST_SECOND = 253_402_300_799.0


@dataclass(frozen=True, slots=True)
class Stall:
    """Why a stalled workflow is not moving (:func:`stall_of`), and since when."""

    since: float
    """POSIX seconds, in this clock: when its newest part changed (corrected for clock offsets)."""
    waiting_for: tuple[str, ...]
    reason: StallReason

    def to_json(self) -> StallBody:
        """The JSON form (docs/design.md, "Aggregator HTTP API")."""
        return {
            # A participant may write any time at all: kept within what a datetime can say.
            "since": iso(datetime.fromtimestamp(min(max(self.since, 0.0), _LAST_SECOND), UTC)),
            "waiting_for": list(self.waiting_for),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class View:
    """The reconstructed workflow, as ``GET /workflows/{id}`` returns it."""

    workflow_id: str
    workflow: str
    state: str
    step: str | None
    complete: bool
    parts: dict[str, Part]
    staleness_ms: int
    anomalies: list[AnomalyBody] = field(default_factory=list)
    generated_at: str = ""
    min_version_unmet: dict[str, int] = field(default_factory=dict)
    """``min_version`` asked of a read and not reached by its deadline (participant → version)."""
    stalled: bool = False
    """Not terminal, and no part changed for ``stall_after_ms``."""
    stall: Stall | None = None
    """Why it is stalled (None when it is not)."""
    clock_offsets: Mapping[str, float] = field(default_factory=dict)
    """The parts whose participant's clock is measured off ours, with the offset (seconds) their
    times were corrected by for ``stalled`` and ``step``."""

    @property
    def changed_at(self) -> float | None:
        """When (POSIX seconds, this clock) its newest part changed, corrected for the participants'
        clock offsets; None when no part's time is known."""
        newest = _newest(self.parts, self.clock_offsets)
        return None if newest is None else newest[0]

    @property
    def etag(self) -> str:
        """A strong ETag from the parts' versions, states and errors (and any unmet ``min_version``).

        The same in every process (``serve --workers``): a digest, not Python's salted ``hash``.
        """
        fields = [self.workflow_id]
        parts = self.parts
        for name in sorted(parts):  # whatever order the parts came in
            part = parts[name]
            fields.append(f"{name}:{part.version}:{part.state}:{part.error}")
        if self.min_version_unmet:
            fields += [f"unmet {n}:{v}" for n, v in sorted(self.min_version_unmet.items())]
        fields.append("stalled" if self.stalled else "")
        if self.stall is not None:
            fields.append(self.stall.reason)
        return f'"{hashlib.blake2b("|".join(fields).encode(), digest_size=16).hexdigest()}"'

    def to_json(self) -> ViewBody:
        """The JSON form of the view (docs/design.md, "Aggregator HTTP API")."""
        body: ViewBody = {
            "workflow_id": self.workflow_id,
            "workflow": self.workflow,
            "state": self.state,
            "step": self.step,
            "complete": self.complete,
            "parts": {name: part.to_json() for name, part in self.parts.items()},
            "staleness_ms": self.staleness_ms,
            "anomalies": self.anomalies,
            "generated_at": self.generated_at,
            "stalled": self.stalled,
            "stall": None if self.stall is None else self.stall.to_json(),
        }
        if self.min_version_unmet:
            body["min_version_unmet"] = self.min_version_unmet
        for name, offset in self.clock_offsets.items():
            body["parts"][name]["clock_offset_ms"] = round(offset * 1000, 3)
        return body


def build_view(
    definition: Definition,
    workflow_id: str,
    parts: dict[str, Part],
    *,
    generated_at: str,
    min_versions: Mapping[str, int] | None = None,
    known_at: Callable[[Part], float] | None = None,
    derivation: Derivation | None = None,
    offsets: Mapping[str, float] | None = None,
) -> View:
    """Derive state, step, completeness, anomalies and staleness from the parts.

    ``min_versions`` a read asked for and the parts do not reach make the view incomplete and
    are listed in ``min_version_unmet``. ``known_at`` (the event feed's watermarks) may bound a
    part's age more tightly than its observation. ``derivation`` remembers what the rules said
    of parts of the same shape before. ``offsets`` (participant → seconds its clock is ahead of
    ours) correct the parts' ``updated_at`` for ``stalled`` and ``step``.
    """
    now = time.monotonic()
    rule, complete, found = derivation(parts) if derivation is not None else derive(definition, parts)
    shifted = {name: offsets[name] for name in parts if name in offsets} if offsets else {}
    newest = _newest(parts, shifted)
    stalled = not (rule and rule.terminal) and _quiet_for(newest, definition.settings.stall_after_ms)
    # A finished workflow waits on nobody: a step there would name whoever happened to move last.
    if rule is not None and rule.terminal:
        step = None
    else:
        step = rule.step if rule and rule.step else (newest[1] if newest else None)
    unmet = (
        {
            name: version
            for name, version in min_versions.items()
            if name in parts and (parts[name].state is None or parts[name].version < version)
        }
        if min_versions
        else {}
    )
    if known_at is None:  # the oldest observation is the largest age (the same float, computed once)
        oldest = min((part.observed for part in parts.values() if part.source != "none"), default=None)
        staleness_ms = 0 if oldest is None else math.ceil(max(0.0, (now - oldest) * 1000))
    else:
        ages = [part.age_ms(now, known_at(part)) for part in parts.values() if part.answered]
        staleness_ms = math.ceil(max(ages)) if ages else 0
    return View(
        workflow_id=workflow_id,
        workflow=definition.name,
        state=rule.state if rule else "UNKNOWN",
        step=step,
        complete=complete and not unmet,
        parts=parts,
        staleness_ms=staleness_ms,
        anomalies=list(found),
        generated_at=generated_at,
        min_version_unmet=unmet,
        stalled=stalled,
        stall=stall_of(definition, rule, parts, found, newest[0]) if stalled and newest else None,
        clock_offsets=shifted,
    )


def stall_of(
    definition: Definition,
    rule: Rule | None,
    parts: Mapping[str, Part],
    found: Sequence[AnomalyBody],
    since: float,
) -> Stall:
    """Why a stalled workflow is not moving, the first of these that holds:

    * ``unmapped``: a part's state has no mapping (``unmapped_state``): nothing can move it
      until the mapping knows that state;
    * ``part_unavailable``: a required part could not be read (what it waits on may be there);
    * ``anomaly``: an ordering is still violated, past the stall time: an event was lost between
      two parts (waiting for the part the ordering requires);
    * ``no_progress``: every part answered and nothing moved (waiting for the rule's step, else
      for the required parts that have no record).
    """
    unmapped = tuple(name for name, p in parts.items() if p.error == "unmapped_state")
    if unmapped:
        return Stall(since, unmapped, "unmapped")
    required = definition.participants
    unread = tuple(
        name
        for name, p in parts.items()
        if p.error is not None and (name not in required or required[name].required)
    )
    if unread:
        return Stall(since, unread, "part_unavailable")
    if found:
        needed = dict.fromkeys(a["requires"].partition(":")[0] for a in found)
        return Stall(since, tuple(needed), "anomaly")
    if rule is not None and rule.step:
        return Stall(since, (rule.step,), "no_progress")
    absent = tuple(
        name
        for name, p in parts.items()
        if p.state is None and (name not in required or required[name].required)
    )
    return Stall(since, absent, "no_progress")


Derived = tuple["Rule | None", bool, tuple[AnomalyBody, ...]]
"""What the definition says of a set of parts: the matching rule, completeness, anomalies."""


def derive(definition: Definition, parts: dict[str, Part]) -> Derived:
    """The first matching rule, whether every required part answered without error, the anomalies."""
    rule = definition.derive({name: part.state for name, part in parts.items()})
    # A required part that failed makes the view incomplete, even when a stale copy is shown.
    complete = all(
        parts[name].answered and parts[name].error is None
        for name, p in definition.participants.items()
        if p.required
    )
    return rule, complete, tuple(anomalies(definition, parts))


class Derivation:
    """:func:`derive` for one definition, remembered per shape of the parts.

    What the rules say depends only on each part's state, error, whether it answered, and its
    history: the many workflows of a running system share a handful of such shapes, so a view
    almost never derives anything. Bounded: past ``size`` shapes (parts with arbitrary states),
    it forgets them all and starts again.
    """

    def __init__(self, definition: Definition, *, size: int = 4096) -> None:
        self._definition = definition
        self._size = size
        self._seen: dict[tuple[object, ...], Derived] = {}

    def __call__(self, parts: dict[str, Part]) -> Derived:
        key = tuple((n, p.state, p.source == "none", p.error, p.history) for n, p in parts.items())
        derived = self._seen.get(key)
        if derived is None:
            if len(self._seen) >= self._size:
                self._seen.clear()
            derived = self._seen[key] = derive(self._definition, parts)
        return derived


def _newest(parts: dict[str, Part], offsets: Mapping[str, float]) -> tuple[float, str] | None:
    """When (POSIX seconds, this clock) the most recently changed part changed, and its name.

    Each ``updated_at`` is its participant's clock, corrected by its offset; without offsets
    the texts compare as they are (RFC 3339 in UTC sorts as time) and only the newest is read.
    """
    if not offsets:
        dated = [(p.updated_at, name) for name, p in parts.items() if p.updated_at]
        if not dated:
            return None
        text, name = max(dated)
        at = epoch_s(text)
        if at is not None:
            return at, name
        # The newest-looking text is not a time (or not in UTC's sortable form): read them all.
    found: tuple[float, str] | None = None
    for name, part in parts.items():
        at = epoch_s(part.updated_at) if part.updated_at else None
        if at is not None:
            corrected = (at - offsets.get(name, 0.0), name)
            found = corrected if found is None or corrected > found else found
    return found


def _quiet_for(newest: tuple[float, str] | None, ms: int) -> bool:
    """Whether the newest part changed more than ``ms`` ago (in this clock)."""
    if ms <= 0 or newest is None:
        return False
    return (time.time() - newest[0]) * 1000 > ms


def anomalies(definition: Definition, parts: dict[str, Part]) -> list[AnomalyBody]:
    """Ordering constraints the parts violate: transitions seen before what must precede them."""
    found: list[AnomalyBody] = []
    for ordering in definition.orderings:
        name, _, state = ordering.part.partition(":")
        req_name, _, req_state = ordering.requires.partition(":")
        part, required = parts.get(name), parts.get(req_name)
        if part is None or part.state != state or required is None or not required.answered:
            continue
        if required.state == req_state or req_state in required.history:
            continue
        found.append(
            {
                "kind": "ordering",
                "part": ordering.part,
                "requires": ordering.requires,
                "detail": f"{name} is {state} but {req_name} is {required.state or 'absent'}: "
                "a transition is in flight or a part is stale",
            }
        )
    return found
