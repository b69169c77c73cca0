"""Hostile MQTT payloads for the saga's real topics, each invalid by construction.

Two kinds, and what each side must do with them:

* ``envelope``: not a valid CloudEvent for its topic (not JSON, not UTF-8, too large, nested too
  deep, a field missing or of the wrong type, a version out of range, a subject that is no
  workflow id, a producer or type the topic does not name, ...). The aggregator's feed counts it
  ``ignored``; every participant subscribed to the topic dead-letters it.
* ``domain``: a valid CloudEvent envelope whose order fields are not a valid order, on a topic
  whose consumer reads them (``order.created``, ``payment.authorized``, ``inventory.reserved``)
  and about a workflow it has never seen. The aggregator takes it as the producer's word (the
  contract does not look into domain fields); the consumer's handler refuses it and
  dead-letters it.

The fixed nasties come first; the rest are drawn by Hypothesis with a fixed seed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contract import MAX_EVENT_BYTES, is_valid_workflow_id, topic_for
from contract.ids import MAX_VERSION
from order_saga import SPECS

Kind = Literal["envelope", "domain"]

#: Event types somebody consumes, and who does.
CONSUMERS: dict[str, tuple[str, ...]] = {
    type_: tuple(name for name, spec in SPECS.items() if type_ in spec.handlers)
    for type_ in sorted({t for spec in SPECS.values() for t in spec.handlers})
}
#: Event types the saga emits that nobody consumes (only the aggregator sees them).
UNCONSUMED = ("order.confirmed", "order.cancelled", "inventory.released")
#: Types whose consumer validates the order fields the event carries (see order_saga/saga.py).
READS_ORDER = ("order.created", "payment.authorized", "inventory.reserved")
ALL_TYPES = tuple(sorted({*CONSUMERS, *UNCONSUMED}))

TIME = "2026-11-25T12:00:00.000000Z"
GOOD_ORDER: dict[str, Any] = {
    "amount": 42.5,
    "currency": "EUR",
    "items": [{"sku": "BOOK-1", "qty": 1}],
    "country": "FR",
}
#: Event fields that must be present.
REQUIRED = ("specversion", "id", "source", "type", "subject", "time", "data")


@dataclass(frozen=True)
class Hostile:
    """One payload, the event type of the topic it goes to, and what kind of invalid it is."""

    type: str
    payload: bytes
    kind: Kind = "envelope"
    label: str = "generated"

    def topic(self, prefix: str) -> str:
        return topic_for(prefix, self.type)

    def consumers(self) -> tuple[str, ...]:
        return CONSUMERS.get(self.type, ())


def event_dict(
    type_: str, subject: str, *, version: int = 1, domain: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A well-formed event of ``type_`` (as its producer would publish it on its own topic)."""
    producer = type_.partition(".")[0]
    return {
        "specversion": "1.0",
        "id": f"fz-{subject}-{version}",
        "source": producer,
        "type": type_,
        "subject": subject,
        "time": TIME,
        "datacontenttype": "application/json",
        "data": {"state": "FUZZED", "version": version, **(domain or {})},
    }


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def fixed() -> list[Hostile]:
    """The hand-picked nasties, spread over the consumed topics."""
    deep = b"[" * 30000 + b"]" * 30000
    digits = b"1" + b"0" * 4999
    created = "order.created"

    def ev(**changes: Any) -> dict[str, Any]:
        base = event_dict(created, "fz-fixed")
        data = {**base["data"], **changes.pop("data", {})}
        return {**base, **changes, "data": data}

    items: list[tuple[str, str, bytes]] = [
        ("nested 30000 deep", created, deep),
        ("nested object 30000 deep", "shipping.failed", b'{"a":' * 30000 + b"1" + b"}" * 30000),
        ("5000-digit integer", created, digits),
        ("5000-digit integer in data", "payment.authorized", _dumps(ev())[:-2] + b', "x": ' + digits + b"}}"),
        ("invalid UTF-8", created, b"\xff\xfe\xfd\x80"),
        ("invalid UTF-8 inside JSON", "inventory.reserved", b'{"specversion": "1.0", "id": "\xc3\x28"}'),
        ("UTF-16 JSON", "payment.declined", json.dumps(ev()).encode("utf-16")),
        ("300 KB", "shipping.failed", b'{"pad": "' + b"a" * 300_000 + b'"}'),
        ("just over the size limit", created, _dumps({**ev(), "pad": "a" * MAX_EVENT_BYTES})),
        ("empty", created, b""),
        ("NUL bytes", "inventory.rejected", b"\x00" * 64),
        ("JSON null", created, b"null"),
        ("JSON array", created, b"[]"),
        ("JSON string", created, b'"order.created"'),
        ("NaN", created, b"NaN"),
        ("wrong type for the topic", created, _dumps(ev(type="payment.authorized"))),
        ("unknown type of the producer", created, _dumps(ev(type="order.exploded"))),
        ("negative version", created, _dumps(ev(data={"version": -1}))),
        ("version 0", created, _dumps(ev(data={"version": 0}))),
        ("version 10**30", created, _dumps(ev(data={"version": 10**30}))),
        (
            "version past SQLite",
            "shipping.scheduled",
            _dumps(ev(type="shipping.scheduled", source="shipping", data={"version": MAX_VERSION + 1})),
        ),
        ("version as string", created, _dumps(ev(data={"version": "1"}))),
        ("version as float", created, _dumps(ev(data={"version": 1.0}))),
        ("version true", created, _dumps(ev(data={"version": True}))),
        ("subject ..", created, _dumps(ev(subject=".."))),
        ("subject .", created, _dumps(ev(subject="."))),
        ("subject with a slash", created, _dumps(ev(subject="a/b"))),
        ("subject with a newline", created, _dumps(ev(subject="fz\n"))),
        ("subject too long", created, _dumps(ev(subject="a" * 129))),
        ("unknown source", created, _dumps(ev(source="billing"))),
        ("unknown source and type", "payment.refunded", _dumps(ev(source="billing", type="billing.sent"))),
        ("specversion 0.3", created, _dumps(ev(specversion="0.3"))),
        ("no data", created, _dumps({k: v for k, v in ev().items() if k != "data"})),
        ("data null", created, _dumps(ev() | {"data": None})),
        ("empty state", created, _dumps(ev(data={"state": ""}))),
        ("binary content type", created, _dumps(ev(datacontenttype="application/octet-stream"))),
        ("repeated member: subject ..", created, _dumps(ev())[:-1] + b', "subject": ".."}'),
        (
            "a dead letter on a real topic",
            "payment.authorized",
            _dumps({"reason": "x", "topic": "t", "payload": None}),
        ),
    ]
    return [Hostile(type_, payload, "envelope", label) for label, type_, payload in items]


# -- drawn ---------------------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
_any_but_str = json_values.filter(lambda v: not isinstance(v, str))


def _bad(field: str, type_: str) -> st.SearchStrategy[Any]:
    """Values ``field`` of an event on ``type_``'s topic can never take."""
    producer = type_.partition(".")[0]
    long_text = st.text(min_size=1, max_size=20).map(lambda s: (s * 200)[:200])
    if field == "specversion":
        return json_values.filter(lambda v: v != "1.0")
    if field in ("id", "time"):
        return _any_but_str | st.just("") | long_text
    if field == "source":
        return json_values.filter(lambda v: v != producer)
    if field == "type":
        return json_values.filter(lambda v: v != type_) | st.sampled_from(ALL_TYPES).filter(
            lambda t: t != type_
        )
    if field == "subject":
        return json_values.filter(
            lambda v: not (isinstance(v, str) and is_valid_workflow_id(v))
        ) | st.sampled_from(["..", ".", "", "a b", "a/b", "ä", "x" * 129, "id\n"])
    if field == "datacontenttype":
        return json_values.filter(lambda v: v != "application/json")
    if field == "traceparent":
        return _any_but_str.filter(lambda v: v is not None) | long_text
    raise AssertionError(field)


def _bad_data() -> st.SearchStrategy[Any]:
    """``data`` values that are never a valid ``EventData``."""
    bad_version = (
        st.integers(max_value=0)
        | st.integers(min_value=MAX_VERSION + 1)
        | st.just(10**30)
        | st.floats()
        | st.booleans()
        | st.text(max_size=5)
        | st.none()
    )
    bad_state = _any_but_str | st.just("") | st.text(min_size=65, max_size=80)
    return st.one_of(
        json_values.filter(lambda v: not isinstance(v, dict)),
        st.fixed_dictionaries({"state": st.just("X"), "version": bad_version}),
        st.fixed_dictionaries({"state": bad_state, "version": st.integers(1, 5)}),
        st.fixed_dictionaries({"version": st.integers(1, 5)}),
        st.fixed_dictionaries({"state": st.just("X")}),
    )


@st.composite
def envelope_invalid(draw: st.DrawFn) -> Hostile:
    """A payload that is not a valid event for its topic."""
    type_ = draw(st.sampled_from(ALL_TYPES))
    shape = draw(st.sampled_from(["bytes", "json", "missing", "mutated", "data"]))
    if shape == "bytes":
        payload = draw(st.binary(max_size=600))
    elif shape == "json":
        # Random JSON: never an object with a specversion (so never by chance a whole event).
        value = draw(json_values.filter(lambda v: not (isinstance(v, dict) and "specversion" in v)))
        payload = _dumps(value)
    else:
        event = event_dict(type_, draw(st.from_regex(r"fz-[a-z0-9]{1,12}", fullmatch=True)))
        if shape == "missing":
            for field in draw(st.lists(st.sampled_from(REQUIRED), min_size=1, max_size=3, unique=True)):
                event.pop(field)
        elif shape == "mutated":
            fields = draw(
                st.lists(
                    st.sampled_from([*REQUIRED[:-1], "datacontenttype", "traceparent"]),
                    min_size=1,
                    max_size=2,
                    unique=True,
                )
            )
            for field in fields:
                event[field] = draw(_bad(field, type_))
        else:
            event["data"] = draw(_bad_data())
        payload = _dumps(event)
    return Hostile(type_, payload, "envelope", shape)


def _bad_orders() -> st.SearchStrategy[dict[str, Any]]:
    """Order fields that are never a valid order."""
    bad_amount = st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=8),
        st.integers(max_value=0),
        st.floats(max_value=0),
        st.just(1e13),
        st.just(10**30),
        st.just(float("nan")),
        st.just(float("inf")),
    )
    bad_code = _any_but_str | st.text(max_size=6).filter(lambda s: not re.fullmatch(r"[A-Z]{3}", s))
    bad_country = _any_but_str | st.text(max_size=4).filter(lambda s: not re.fullmatch(r"[A-Z]{2}", s))
    bad_item = st.one_of(
        st.fixed_dictionaries({"sku": st.just("BOOK-1"), "qty": st.integers(max_value=0)}),
        st.fixed_dictionaries({"sku": st.just("BOOK-1"), "qty": st.integers(min_value=1_000_001)}),
        st.fixed_dictionaries({"sku": st.just("BOOK-1"), "qty": st.floats() | st.text(max_size=3)}),
        st.fixed_dictionaries({"sku": st.sampled_from(["", "a b", "ä", "x" * 65]), "qty": st.just(1)}),
        st.fixed_dictionaries({"sku": st.just("BOOK-1"), "qty": st.just(1), "extra": json_values}),
        json_values.filter(lambda v: not isinstance(v, dict)),
    )
    bad_items = st.one_of(
        st.just([]),
        st.lists(bad_item, min_size=1, max_size=3),
        st.lists(st.just({"sku": "A", "qty": 1}), min_size=101, max_size=101),
        json_values.filter(lambda v: not isinstance(v, list)),
    )
    mutations = {"amount": bad_amount, "currency": bad_code, "items": bad_items, "country": bad_country}

    @st.composite
    def order(draw: st.DrawFn) -> dict[str, Any]:
        fields = dict(GOOD_ORDER)
        for name in draw(st.lists(st.sampled_from(sorted(mutations)), min_size=1, max_size=2, unique=True)):
            if draw(st.booleans()):
                fields[name] = draw(mutations[name])
            else:
                del fields[name]
        return fields

    return order()


@st.composite
def domain_invalid(draw: st.DrawFn) -> Hostile:
    """A valid event about a new workflow whose order fields its consumer must refuse."""
    type_ = draw(st.sampled_from(READS_ORDER))
    subject = "fz-dom-" + draw(st.from_regex(r"[a-z0-9]{12}", fullmatch=True))
    event = event_dict(type_, subject, version=draw(st.integers(1, 3)), domain=draw(_bad_orders()))
    return Hostile(type_, json.dumps(event).encode(), "domain", "domain")


def _collect(strategy: st.SearchStrategy[Hostile], count: int) -> list[Hostile]:
    found: list[Hostile] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(hostile: Hostile) -> None:
        if len(found) < count:
            found.append(hostile)

    collect()
    return found


def drawn(*, envelope: int, domain: int) -> list[Hostile]:
    """Up to ``envelope`` + ``domain`` generated payloads of each kind, the same on every run."""
    return _collect(envelope_invalid(), envelope) + _collect(domain_invalid(), domain)
