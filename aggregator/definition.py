"""Workflow definitions: which participants hold parts, and how the overall state is derived.

A definition is TOML validated by pydantic (no ``eval``): conditions are plain data. Rules are
tried in order and the first whose ``when`` matches gives the overall ``state`` (and ``step``).
A condition maps a participant to a state, a list of states, or one of two keywords:
``"absent"`` (no record, or not reachable) and ``"present"`` (any state). Orderings declare
``"part:STATE" requires "other:STATE"``; a view that shows the first without the second (in
the other part's current state or history) carries an *anomaly*: a transition in flight, not
an error.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import DefinitionError
from .mapping import BatchMapping, EventMapping, StatusMapping

ABSENT = "absent"
PRESENT = "present"
Freshness = Literal["on-demand", "ttl", "events"]

_Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
_State = Annotated[str, Field(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Token = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]
_EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


def _bearer(token: str | None, token_env: str | None, where: str) -> str | None:
    """The token configured directly or through an environment variable; a configured but empty one is an error."""
    if token_env is None:
        return token
    value = os.environ.get(token_env, "")
    if not value.strip():
        state = "is empty" if token_env in os.environ else "is not set"
        raise DefinitionError(
            f"{where}.token_env names ${token_env}, which {state}: set it, or remove token_env"
        )
    value = value.strip()
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise DefinitionError(
            f"{where}.token_env names ${token_env}, which holds characters a bearer token cannot "
            "carry (spaces, control characters or non-ASCII)"
        )
    return value


class ParticipantDef(_Model):
    """One participant: where its status API is and how long to wait for it."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")]
    """The participant's base URL (``http`` or ``https``); its status API is under it."""
    timeout_ms: Annotated[int, Field(gt=0, le=60_000)] = 1000
    """How long one call to it may take (within the read's deadline)."""
    required: bool = True
    """Whether the view is ``complete`` only with this part (an optional part may be missing)."""
    token: _Token | None = Field(default=None, repr=False)
    """Bearer token sent to this participant."""
    token_env: _EnvName | None = None
    """Environment variable holding that token (preferred: keeps secrets out of files)."""
    states: list[_State] | None = None
    """The states this participant's part can be in; when given, rules and orderings are checked
    against them, so a misspelled state is an error at load instead of a rule that never matches."""
    status: StatusMapping | None = None
    """How to read a participant that does not speak the contract's status API (docs/mapping.md);
    without it, ``GET /status/{id}`` and the contract's body."""
    batch: BatchMapping | None = None
    """With ``status``: many workflows' parts in one call."""
    events: EventMapping | None = None
    """With ``status``: the participant's own events, for ``events`` freshness."""

    @model_validator(mode="after")
    def _mapping(self) -> ParticipantDef:
        for key in ("batch", "events"):
            if getattr(self, key) is not None and self.status is None:
                raise ValueError(
                    f"{key} needs a status mapping too ([participants.NAME.status]): the state "
                    "table and the selectors of a record live there"
                )
        if self.status is not None:
            table = self.status.states
            if table is not None and self.states is not None:
                for raw, state in table.items():
                    if state not in self.states:
                        raise ValueError(
                            f"status.states maps {raw!r} to {state!r}, which is not one of the "
                            f"declared states {self.states}"
                        )
            has_token = self.token is not None or self.token_env is not None
            if has_token and any(name.lower() == "authorization" for name in self.status.headers):
                raise ValueError(
                    "give token/token_env or an Authorization header in status.headers, not both"
                )
        return self

    @property
    def mapped(self) -> bool:
        """Whether the participant is read through a mapping instead of the contract's status API."""
        return self.status is not None

    @property
    def versioned(self) -> bool:
        """Whether its parts carry a version (the contract's do; a mapped one's when it maps one)."""
        return self.status is None or self.status.version is not None

    @field_validator("url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        authority = value.split("://", 1)[1].split("/", 1)[0]
        if "@" in authority:
            raise ValueError(
                "credentials in the URL are not supported (they would be logged): use token or token_env"
            )
        return value.rstrip("/")

    def bearer(self, name: str = "participant") -> str | None:
        """The outbound token, from the environment variable if one is named (:class:`DefinitionError` if that is empty)."""
        return _bearer(self.token, self.token_env, f"participants.{name}")


class Rule(_Model):
    """``when`` all conditions hold, the workflow is in ``state`` (at ``step``)."""

    when: dict[_Name, _State | list[_State]] = Field(default_factory=dict)
    """Participant → the state its part must be in (or one of a list; ``absent``: no record,
    ``present``: any record); empty: always (a last, catch-all rule)."""
    state: _State
    """The workflow's derived state when the rule is the first that matches."""
    step: _Name | None = None
    """The participant the workflow waits on; by default the one whose part changed last (none
    once the workflow is in a terminal state)."""
    terminal: bool = False
    """The workflow is over in this state: it is never reported as stalled."""

    def matches(self, states: dict[str, str | None]) -> bool:
        """Whether every condition holds for the parts' current ``states``."""
        for name, wanted in self.when.items():
            state = states.get(name)
            options = wanted if isinstance(wanted, list) else [wanted]
            if not any(_holds(option, state) for option in options):
                return False
        return True


def _holds(option: str, state: str | None) -> bool:
    if option == ABSENT:
        return state is None
    if option == PRESENT:
        return state is not None
    return state == option


class Ordering(_Model):
    """``part`` ("shipping:SCHEDULED") is only valid once ``requires`` ("payment:AUTHORIZED") happened."""

    part: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*:.+$")]
    requires: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*:.+$")]


class Auth(_Model):
    """Inbound bearer token for the aggregator API (``token`` or, better, ``token_env``)."""

    token: _Token | None = Field(default=None, repr=False)
    token_env: _EnvName | None = None

    def bearer(self) -> str | None:
        """The configured inbound token, if any (:class:`DefinitionError` if ``token_env`` names an empty variable)."""
        return _bearer(self.token, self.token_env, "auth")


class Settings(_Model):
    """Knobs of the aggregator itself."""

    freshness: Freshness = "on-demand"
    """When a kept part may be served without asking its participant: ``on-demand`` (never: every
    read asks), ``ttl`` (for ``ttl_ms``), ``events`` (while the event feed is up and has not
    announced a change)."""
    deadline_ms: Annotated[int, Field(gt=0, le=120_000)] = 2000
    """How long one read may take in all; at the deadline the view is returned with what arrived
    (a request may shorten it with ``?timeout_ms=``)."""
    ttl_ms: Annotated[int, Field(ge=0, le=86_400_000)] = 1000
    """In ``ttl`` mode, how long a fetched part is served without asking again."""
    stale_while_revalidate_ms: Annotated[int, Field(ge=0)] = 1000
    """Past ``ttl_ms``, how much longer a part may still be served while it is fetched again in
    the background."""
    stale_if_error_ms: Annotated[int, Field(ge=0)] = 60_000
    """How old a kept part may be and still be served (``source: stale``) when its participant
    fails."""
    cache_size: Annotated[int, Field(gt=0, le=10_000_000)] = 100_000
    """How many parts the aggregator keeps at most (least recently used go first)."""
    max_response_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    """The largest answer read from a participant; a larger one is a ``bad_response``."""
    breaker_failures: Annotated[int, Field(gt=0)] = 5
    """Consecutive failed calls that open a participant's circuit breaker (calls then fail at
    once, ``circuit_open``)."""
    breaker_reset_ms: Annotated[int, Field(gt=0)] = 2000
    """How long an open breaker waits before it lets one call test the participant again."""
    batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    """While a call to a participant is in flight, how long reads of other workflows wait to go
    out together in one batch call (sooner if the call lands first); a read with no call in
    flight goes out at once. 0: every read at the end of its event-loop turn."""
    hedge: bool = True
    """Send a second call to a participant whose first outlives its usual latency (delayed
    hedging); whichever answers first is used."""
    hedge_budget: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Hedges per call at most (0.05: one extra call in twenty), with a small burst."""
    hedge_percentile: Annotated[float, Field(gt=0, lt=100)] = 95.0
    """The latency percentile past which a call is hedged (and at least twice the median, and
    5 ms)."""
    max_watchers: Annotated[int, Field(gt=0)] = 1000
    """Open watch streams at most; past it, a new one is refused (503)."""
    watch_poll_ms: Annotated[int, Field(gt=0)] = 1000
    """Without an event feed, how often a watched workflow is re-read."""
    watch_heartbeat_ms: Annotated[int, Field(gt=0)] = 15_000
    """How often an idle watch stream sends an SSE comment, so dead clients are noticed."""
    stall_after_ms: Annotated[int, Field(ge=0, le=86_400_000)] = 30_000
    """A workflow not in a terminal state whose newest part changed longer ago than this is
    ``stalled``; 0: never."""


#: The workflow events that are not a derived state (docs/howto/notify.md).
STALLED = "stalled"
RECOVERED = "recovered"


class NotifyDef(_Model):
    """A webhook: every workflow event (or those of some ``states``) POSTed to ``url``, signed."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/?#@]+(/[^\s#]*)?$", max_length=2048)]
    """Where each event is POSTed (``http`` or ``https``; no credentials before the host)."""
    secret_env: _EnvName
    """The environment variable holding the HMAC-SHA256 key; each request carries
    ``X-Signature-256: sha256=<hex HMAC of the body>``. Unset or empty is an error when the
    aggregator starts."""
    states: list[_State] | None = None
    """The events to send: derived states (``COMPLETED``), ``stalled``, ``recovered``; by default all."""
    name: _Name | None = None
    """How metrics and logs name this receiver (default: its position, ``0``, ``1``, ...)."""
    timeout_ms: Annotated[int, Field(gt=0, le=60_000)] = 5000
    """How long one delivery attempt may take."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 12
    """Attempts per event (the first and the retries) before it is given up, counted as failed.
    Retries wait 0.2 s, doubling up to 30 s, with jitter (or the receiver's ``Retry-After``)."""
    queue: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Events waiting for this receiver at most; past it, new events are dropped and counted."""

    def secret(self, where: str) -> bytes:
        """The signing key, read from the environment now (:class:`DefinitionError` if unset or empty)."""
        value = os.environ.get(self.secret_env, "")
        if not value:
            state = "is empty" if self.secret_env in os.environ else "is not set"
            raise DefinitionError(
                f"{where}.secret_env names ${self.secret_env}, which {state}: webhooks are always signed"
            )
        return value.encode()


class Definition(_Model):
    """A workflow definition (see the module docstring)."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    participants: dict[_Name, ParticipantDef] = Field(min_length=1)
    initiator: _Name | None = None
    """The participant that starts workflows (its first event creates one); in ``events`` mode
    the others' parts of a workflow it just created are known absent without asking them."""
    rules: list[Rule] = Field(min_length=1)
    orderings: list[Ordering] = Field(default_factory=list)
    settings: Settings = Field(default_factory=Settings)
    auth: Auth = Field(default_factory=Auth)
    notify: list[NotifyDef] = Field(default_factory=list)
    """Webhooks told of workflow events (``events`` freshness only; docs/howto/notify.md)."""

    @model_validator(mode="after")
    def _known_names(self) -> Definition:
        names = set(self.participants)
        if self.initiator is not None and self.initiator not in names:
            raise ValueError(f"initiator {self.initiator!r} is not a participant (known: {sorted(names)})")
        for i, rule in enumerate(self.rules):
            for name in [*rule.when, *([rule.step] if rule.step else [])]:
                if name not in names:
                    raise ValueError(
                        f"rules[{i}] names unknown participant {name!r} (known: {sorted(names)})"
                    )
        for i, ordering in enumerate(self.orderings):
            for ref in (ordering.part, ordering.requires):
                if ref.partition(":")[0] not in names:
                    raise ValueError(
                        f"orderings[{i}] names unknown participant in {ref!r} (known: {sorted(names)})"
                    )
        self._known_states()
        events = {rule.state for rule in self.rules} | {"UNKNOWN", STALLED, RECOVERED}
        for i, receiver in enumerate(self.notify):
            for state in receiver.states or ():
                if state not in events:
                    raise ValueError(
                        f"notify[{i}].states names {state!r}, which is no rule's state, nor "
                        f"{STALLED!r} or {RECOVERED!r}"
                    )
        receivers = [r.name or str(i) for i, r in enumerate(self.notify)]
        if len(receivers) != len(set(receivers)):
            raise ValueError("notify: two receivers share a name")
        return self

    def _known_states(self) -> None:
        """Rules and orderings name only states their participant declares (where it declares them)."""

        def check(name: str, state: str, where: str) -> None:
            declared = self.participants[name].states
            if declared is not None and state not in (ABSENT, PRESENT) and state not in declared:
                raise ValueError(f"{where} names state {state!r} of {name}, which declares {declared}")

        for i, rule in enumerate(self.rules):
            for name, wanted in rule.when.items():
                for state in wanted if isinstance(wanted, list) else [wanted]:
                    check(name, state, f"rules[{i}]")
        for i, ordering in enumerate(self.orderings):
            for ref in (ordering.part, ordering.requires):
                name, _, state = ref.partition(":")
                check(name, state, f"orderings[{i}]")

    def versioned(self) -> frozenset[str]:
        """The participants whose parts carry a version (``min_version`` can name only these)."""
        return frozenset(name for name, spec in self.participants.items() if spec.versioned)

    def credentials(self) -> tuple[str | None, dict[str, str | None]]:
        """The inbound token and each participant's outbound token, read now.

        Raises :class:`DefinitionError` when a ``token_env`` names an unset or empty variable:
        a credential that is configured but empty must never turn authentication off.
        """
        outbound = {name: spec.bearer(name) for name, spec in self.participants.items()}
        return self.auth.bearer(), outbound

    def open_initiator_states(self) -> list[str] | None:
        """The initiator's states in which a workflow may still be running (None: all of them).

        Its declared states, less those in which the workflow is surely over: the first rule
        that can match with the initiator in that state is terminal and looks at nothing else.
        A rule before it that also looks at other parts and is not terminal keeps the state
        open (``{order = CANCELLED, inventory = RESERVED}`` is still compensating, whatever a
        later ``{order = CANCELLED}`` says).
        """
        if self.initiator is None:
            return None
        declared = self.participants[self.initiator].states
        if declared is None:
            return None
        return [state for state in declared if not self._surely_over(state)]

    def _surely_over(self, initiator_state: str) -> bool:
        """Whether every workflow whose initiator is in ``initiator_state`` derives a terminal rule."""
        assert self.initiator is not None
        for rule in self.rules:
            wanted = rule.when.get(self.initiator)
            if wanted is not None:
                options = wanted if isinstance(wanted, list) else [wanted]
                if not any(_holds(option, initiator_state) for option in options):
                    continue  # cannot match in this state
            if len(rule.when) == (0 if wanted is None else 1):
                return rule.terminal  # matches whatever the other parts are: it decides
            if not rule.terminal:
                return False  # may match, and then the workflow is not over
        return False

    def derive(self, states: dict[str, str | None]) -> Rule | None:
        """The first rule matching the parts' states."""
        return next((rule for rule in self.rules if rule.matches(states)), None)

    def with_urls(self, urls: dict[str, str]) -> Definition:
        """A copy with some participants' base URLs replaced (``--participant NAME=URL``)."""
        unknown = set(urls) - set(self.participants)
        if unknown:
            raise DefinitionError(
                f"unknown participant(s) {sorted(unknown)}; known: {sorted(self.participants)}"
            )
        participants = dict(self.participants)
        for name, url in urls.items():
            try:
                participants[name] = ParticipantDef.model_validate(
                    {**participants[name].model_dump(), "url": url}
                )
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                reason = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
                shown = "the URL" if "@" in url else repr(url)  # never echo credentials
                raise DefinitionError(
                    str(reason) if reason else f"{shown} is not an http(s) base URL",
                    field=f"participants.{name}.url",
                ) from exc
        return self.model_copy(update={"participants": participants})

    def with_settings(self, **changes: Any) -> Definition:
        """A copy with some settings replaced (validated)."""
        settings = Settings.model_validate({**self.settings.model_dump(), **changes})
        return self.model_copy(update={"settings": settings})


def parse_definition(text: str, *, path: str = "<string>") -> Definition:
    """Parse TOML text into a :class:`Definition`; :class:`DefinitionError` says where and why."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"not valid TOML: {exc}", path=path) from exc
    try:
        return Definition.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        expected = first["msg"]
        if first["type"] == "value_error":
            expected = str(first.get("ctx", {}).get("error", expected))
        elif first["type"] == "extra_forbidden":
            expected = "no such field here"
        elif first["type"] == "missing":
            expected = "this field is required"
        raise DefinitionError(f"{expected}{more}", path=path, field=field) from exc


def load_definition(path: str | Path | None = None) -> Definition:
    """Load a definition file, or the packaged one for the example saga when ``path`` is None."""
    if path is None:
        text = resources.files("aggregator").joinpath("order_saga.toml").read_text("utf-8")
        return parse_definition(text, path="aggregator/order_saga.toml")
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise DefinitionError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise DefinitionError("not UTF-8 text", path=str(path)) from exc
    return parse_definition(text, path=str(path))
