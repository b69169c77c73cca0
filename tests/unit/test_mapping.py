"""Mappings (DESIGN §5a): compiled expressions, load errors, reading records, ordering, mapped events."""

from __future__ import annotations

import json
import time
from importlib.resources import files
from typing import Any

import jmespath
import pytest

from aggregator import load_definition
from aggregator._events import EventFeed
from aggregator._mapper import Mapper, MappingProblem, parse_json
from aggregator._store import PartStore
from aggregator.definition import ParticipantDef, parse_definition
from aggregator.errors import DefinitionError
from aggregator.mapping import Expression, topic_matches
from aggregator.metrics import Metrics
from aggregator.openapi import openapi_document
from aggregator.view import Part
from contract import BrokerURL

DOCS: list[Any] = [
    {"items": [{"status": "captured", "n": 1}, {"status": "declined"}]},
    {"items": []},
    {"items": {"0": "x"}},
    {"items": "text"},
    {"data": {"attributes": {"status": "confirmed", "a-b": 2}}},
    {"data": [1, 2, 3]},
    [{"a": 1}, {"a": 2}],
    [],
    "text",
    7,
    None,
    {"a": None},
    {"a": {"b": [[1, 2], [3, {"c": "deep"}]]}},
]
WALKS = [
    "items",
    "items[0]",
    "items[1].status",
    "items[-1]",
    "items[5]",
    "items[0].status",
    "data.attributes.status",
    'data.attributes."a-b"',
    "data[1]",
    "[0]",
    "[0].a",
    "@",
    "a",
    "a.b",
    "a.b[1][1].c",
    "a.b[0][-1]",
    "missing.deeper",
]


@pytest.mark.parametrize("text", WALKS)
def test_a_walk_runs_as_direct_lookups_and_agrees_with_jmespath(text: str) -> None:
    """Field and index walks skip the interpreter, and select what JMESPath selects on every document."""
    expression = Expression(text)
    assert expression.steps is not None
    for doc in DOCS:
        assert expression.search(doc) == jmespath.search(text, doc), (text, doc)


@pytest.mark.parametrize(
    "text",
    ["items[?status=='declined'] | [0]", "items[*].status", "length(items)", "{a: amount, b: length(items)}"],
)
def test_other_expressions_run_through_jmespath(text: str) -> None:
    """Projections, filters and functions are evaluated by the jmespath package."""
    expression = Expression(text)
    assert expression.steps is None
    doc = {"amount": 3, "items": [{"status": "captured"}, {"status": "declined"}]}
    assert expression.search(doc) == jmespath.search(text, doc)


@pytest.mark.parametrize("text", ["{amount: amount}", "{room: room, first: items[0].status, all: @}"])
def test_an_object_of_walks_is_built_directly_and_agrees_with_jmespath(text: str) -> None:
    """``{key: walk, …}``, the usual data selector, skips the interpreter too, with its semantics."""
    expression = Expression(text)
    for doc in [*DOCS, {"amount": 3, "room": "d-2", "items": [{"status": "x"}]}]:
        assert expression.search(doc) == jmespath.search(text, doc), (text, doc)


def test_data_over_its_bound_is_refused_whatever_the_expression() -> None:
    """A data object over 16 KiB is a bad_response, whether the answer's size bounds it or not."""
    mapper = _mapper()
    record = {"status": "captured", "revision": 1, "updated": 1, "amount": "x" * 20_000}
    body = json.dumps({"items": [record]}).encode()
    for size in (len(body), None):
        with pytest.raises(MappingProblem, match="over 16384 bytes"):
            mapper.read(record, size=size)
    small = {"status": "captured", "revision": 1, "updated": 1, "amount": "é" * 100}
    assert mapper.read(small, size=300).data == {"amount": "é" * 100}
    copies = Expression("{a: @, b: @, c: @}")
    assert copies.copies == 3 and Expression("to_string(@)").copies is None


BASE = """
name = "m"
[participants.pay]
url = "http://127.0.0.1:9"
states = ["AUTHORIZED", "DECLINED"]
[participants.pay.status]
path = "/v2/payments?order_id={id}"
record = "items[0]"
state = "status"
version = "revision"
time = "updated"
data = "{amount: amount}"
[participants.pay.status.states]
captured = "AUTHORIZED"
declined = "DECLINED"
[[rules]]
state = "ANY"
"""


def test_a_definition_with_a_mapping_loads_and_round_trips() -> None:
    """Expressions compile at load; the definition dumps them back as text and loads again (with_urls)."""
    definition = parse_definition(BASE)
    status = definition.participants["pay"].status
    assert status is not None and status.record is not None
    assert status.record.text == "items[0]" and status.record.steps == ("items", 0)
    moved = definition.with_urls({"pay": "http://127.0.0.1:10"})
    moved_status = moved.participants["pay"].status
    assert moved_status is not None and moved_status.state.text == "status"
    assert moved.versioned() == frozenset({"pay"})


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            ('state = "status"', 'state = "status[?"'),
            "participants.pay.status.state",
            "not a JMESPath expression",
        ),
        (
            ('path = "/v2/payments?order_id={id}"', 'path = "/v2/payments"'),
            "participants.pay.status.path",
            "{id}",
        ),
        (
            ('path = "/v2/payments?order_id={id}"', 'path = "v2/{id}"'),
            "participants.pay.status.path",
            "start with '/'",
        ),
        (
            ('path = "/v2/payments?order_id={id}"', 'path = "/v2/{id}/{other}"'),
            "participants.pay.status.path",
            "{other}",
        ),
        (('declined = "DECLINED"', 'declined = "REFUSED"'), "participants.pay", "'REFUSED'"),
        (('record = "items[0]"', 'record = ""'), "participants.pay.status.record", "non-empty"),
        (('version = "revision"', "version = 3"), "participants.pay.status.version", "JMESPath"),
        (('time = "updated"', 'tme = "updated"'), "participants.pay.status.tme", "no such field"),
    ],
)
def test_a_bad_mapping_is_a_load_error_naming_its_key(
    change: tuple[str, str], field: str, message: str
) -> None:
    """Every mistake in a mapping is refused when the definition loads, and the error names the key."""
    with pytest.raises(DefinitionError) as caught:
        parse_definition(BASE.replace(*change), path="trip.toml")
    assert caught.value.field == field
    assert message in str(caught.value)


def test_batch_and_events_need_a_status_mapping() -> None:
    """A batch or events section without the status mapping it reads through is refused at load."""
    text = BASE.replace(
        "[participants.pay.status]",
        "[participants.pay.batch]\npath='/b?ids={ids}'\nrecords='items'\nid='id'\n[participants.pay.status]",
    )
    assert parse_definition(text).participants["pay"].batch is not None
    bare = """
name = "m"
[participants.pay]
url = "http://127.0.0.1:9"
[participants.pay.events]
topic = "payments/+/events"
workflow_id = "order_id"
state = "status"
[[rules]]
state = "ANY"
"""
    with pytest.raises(DefinitionError, match="events needs a status mapping"):
        parse_definition(bare)


@pytest.mark.parametrize("topic", ["a/#/b", "a+/b", "", "$SYS/#", "a/b#"])
def test_a_bad_topic_filter_is_refused(topic: str) -> None:
    """Wildcards take whole levels, '#' only the last; broker topics ('$…') are not ours to read."""
    text = BASE + f'\n[participants.pay.events]\ntopic = "{topic}"\nworkflow_id = "id"\nstate = "status"\n'
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text)
    assert caught.value.field == "participants.pay.events.topic"


def test_topic_filters_match_as_mqtt_does() -> None:
    """'+' is one level, '#' the rest (the parent level included)."""
    assert topic_matches("payments/+/events", "payments/t-1/events")
    assert not topic_matches("payments/+/events", "payments/t-1/x/events")
    assert topic_matches("hotel/#", "hotel") and topic_matches("hotel/#", "hotel/a/b")
    assert not topic_matches("hotel/+", "hotel/a/b")
    assert topic_matches("airline/bookings", "airline/bookings")
    assert not topic_matches("airline/bookings", "airline/bookings/x")
    assert not topic_matches("#", "$SYS/broker")


def _mapper(text: str = BASE) -> Mapper:
    return Mapper(parse_definition(text).participants["pay"])


BATCH = BASE.replace(
    "[[rules]]",
    """[participants.pay.batch]
path = "/v2/payments?order_id={ids}"
records = "items"
id = "order_id"
[[rules]]""",
)


def _records(amounts: list[str], *, states: dict[int, str] | None = None) -> dict[str, Any]:
    status = states or {}
    record = {"revision": 1, "updated": 1}
    return {
        "items": [
            {**record, "order_id": f"w{i}", "status": status.get(i, "captured"), "amount": a}
            for i, a in enumerate(amounts)
        ]
    }


@pytest.mark.parametrize(
    ("amounts", "states", "problem"),
    [
        (["x" * 300] * 10, {}, None),  # together within the bound: measured once
        (["x" * 300] * 100, {}, None),  # together over it, each within: measured one at a time
        (["x" * 300] * 5 + ["x" * 20_000] + ["x" * 300] * 5, {}, "over 16384 bytes"),
        (["x" * 300, "x" * 20_000, "x"], {2: "settled"}, "over 16384 bytes"),  # the earlier problem
        (["x" * 300, "x", "x" * 20_000], {1: "settled"}, "'settled'"),
    ],
)
def test_a_batch_answer_maps_as_its_records_read_one_at_a_time_would(
    amounts: list[str], states: dict[int, str], problem: str | None
) -> None:
    """Data the answer's size does not bound is measured for all records together, yet the parts and
    the problem (the first in the records' order) are those of reading each record alone."""
    mapper = _mapper(BATCH)
    doc = _records(amounts, states=states)
    size = len(json.dumps(doc))
    wanted = {f"w{i}" for i in range(len(amounts))}
    if problem is None:
        found = mapper.batch_values(doc, wanted, size=size)
        alone = {r["order_id"]: mapper.values(r, size=size) for r in doc["items"]}
        assert found == alone and len(found) == len(amounts)
        return
    with pytest.raises(MappingProblem, match=problem) as in_batch:
        mapper.batch_values(doc, wanted, size=size)
    first = None
    for record in doc["items"]:
        try:
            mapper.read(record, size=size)
        except MappingProblem as caught:
            first = caught
            break
    assert first is not None and (in_batch.value.kind, in_batch.value.detail) == (first.kind, first.detail)


def test_a_record_maps_through_the_table_with_version_time_and_data() -> None:
    """The raw state goes through the table; epoch milliseconds become RFC 3339; data is an object."""
    mapper = _mapper()
    record = mapper.record(
        {"items": [{"status": "captured", "revision": 2, "updated": 1764950400123, "amount": 5}]}
    )
    mapped = mapper.read(record)
    assert (mapped.state, mapped.raw_state, mapped.version) == ("AUTHORIZED", "captured", 2)
    assert mapped.updated_at == "2025-12-05T16:00:00.123000Z"
    assert mapped.data == {"amount": 5}
    assert mapper.order == "version"


@pytest.mark.parametrize("empty", [{"items": []}, {"items": None}, {}, {"items": [{}]}, {"other": 1}])
def test_null_empty_list_or_empty_object_at_the_record_is_no_record(empty: Any) -> None:
    """What the record selector finds empty means "no record", as a 404 does."""
    assert _mapper().record(empty) is None


@pytest.mark.parametrize(
    ("record", "kind", "words"),
    [
        ({"status": "settled", "revision": 1, "updated": 1}, "unmapped_state", "'settled'"),
        ({"status": True, "revision": 1, "updated": 1}, "bad_response", "a bool"),
        ({"revision": 1, "updated": 1}, "bad_response", "gave nothing"),
        ({"status": "captured", "revision": "2", "updated": 1}, "bad_response", "version"),
        ({"status": "captured", "revision": 1.5, "updated": 1}, "bad_response", "version"),
        ({"status": "captured", "revision": -1, "updated": 1}, "bad_response", "version"),
        ({"status": "captured", "revision": 1, "updated": "yesterday"}, "bad_response", "not RFC 3339"),
        (
            {"status": "captured", "revision": 1, "updated": "2026-13-06T07:00:00.000000Z"},
            "bad_response",
            "not RFC 3339",
        ),
        (  # digits of another script: fromisoformat reads none, so the canonical form has none either
            {"status": "captured", "revision": 1, "updated": "2026-12-06T07:00:00.00000\u0663Z"},
            "bad_response",
            "not RFC 3339",
        ),
        ({"status": "captured", "revision": 1, "updated": None}, "bad_response", "time"),
        ({"status": "captured", "revision": 1, "updated": 1e30}, "bad_response", "out of range"),
        ({"status": "captured", "revision": 1, "updated": 1, "amount": 1}, None, None),
    ],
)
def test_what_does_not_map_is_a_problem_of_its_kind(
    record: dict[str, Any], kind: str | None, words: str | None
) -> None:
    """An unknown raw state is unmapped_state (naming it); a value of the wrong type is bad_response."""
    mapper = _mapper()
    if kind is None:
        assert mapper.read(record).state == "AUTHORIZED"
        assert mapper.problems(record) == []
        return
    with pytest.raises(MappingProblem) as caught:
        mapper.read(record)
    assert caught.value.kind == kind
    assert words is not None and words in caught.value.detail
    assert [p.kind for p in mapper.problems(record)] == [kind]


def test_every_problem_of_a_record_is_found_not_only_the_first() -> None:
    """check-participant reports an unmapped state and a bad version and a bad time together."""
    problems = _mapper().problems({"status": "settled", "revision": "x", "updated": "never"})
    assert [p.kind for p in problems] == ["unmapped_state", "bad_response", "bad_response"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-06T07:00:00Z", "2026-12-06T07:00:00.000000Z"),
        ("2026-12-06T07:00:00.123456Z", "2026-12-06T07:00:00.123456Z"),
        ("2026-12-06T08:00:00+01:00", "2026-12-06T07:00:00.000000Z"),
        ("2026-12-06T07:00:00.5", "2026-12-06T07:00:00.500000Z"),
        (1764950400, "2025-12-05T16:00:00.000000Z"),
        (1764950400.25, "2025-12-05T16:00:00.250000Z"),
        (1764950400250, "2025-12-05T16:00:00.250000Z"),
    ],
)
def test_times_in_rfc_3339_seconds_or_milliseconds_become_utc(value: Any, expected: str) -> None:
    """Offsets are converted to UTC; numbers above 1e11 are milliseconds; a time without zone is UTC."""
    mapped = _mapper().read({"status": "captured", "revision": 1, "updated": value})
    assert mapped.updated_at == expected


def test_raw_numbers_are_compared_as_strings_and_without_a_table_used_as_they_are() -> None:
    """A numeric raw state matches a table key written as a string; without a table, declared states apply."""
    numeric = BASE.replace('captured = "AUTHORIZED"', '3 = "AUTHORIZED"')
    assert _mapper(numeric).read({"status": 3, "revision": 1, "updated": 1}).state == "AUTHORIZED"
    no_table = BASE.split("[participants.pay.status.states]")[0] + "[[rules]]\nstate = 'ANY'\n"
    mapper = _mapper(no_table)
    assert mapper.read({"status": "DECLINED", "revision": 1, "updated": 1}).state == "DECLINED"
    with pytest.raises(MappingProblem, match="declared states"):
        mapper.read({"status": "declined", "revision": 1, "updated": 1})


def test_json_that_is_not_json_is_refused_as_bad_response() -> None:
    """NaN, truncated text and absurd nesting are bad answers, never exceptions of another kind."""
    for body in (b"NaN", b'{"a": ', b"[" * 100_000 + b"]" * 100_000, b"\xff"):
        with pytest.raises(MappingProblem) as caught:
            parse_json(body)
        assert caught.value.kind == "bad_response"


def _part(version: int, observed: float, order: str, state: str = "HELD") -> Part:
    return Part("flights", state, version, None, observed, "", "live", order=order)  # type: ignore[arg-type]


def test_a_time_ordered_part_is_never_replaced_by_one_with_an_earlier_time() -> None:
    """Without a version, the mapped time (in microseconds) orders parts, whatever order answers land in."""
    store = PartStore(10)
    newer = _part(2_000_000, observed=1.0, order="time", state="RELEASED")
    older = _part(1_000_000, observed=2.0, order="time", state="HELD")
    assert store.offer("t", newer).taken
    offered = store.offer("t", older)
    kept = store.get("flights", "t")
    assert not offered.taken and kept is not None and (kept.state, kept.version) == ("RELEASED", 2_000_000)
    assert newer.to_json()["version"] is None and "ordered" not in newer.to_json()


def test_an_unordered_part_is_replaced_by_every_newer_observation_and_says_so() -> None:
    """With neither version nor time, the newest observation wins, and the part carries ordered: false."""
    store = PartStore(10)
    first = _part(0, observed=1.0, order="none", state="HELD")
    second = _part(0, observed=2.0, order="none", state="RELEASED")
    store.offer("t", first)
    assert store.offer("t", second).taken
    body = second.to_json()
    assert body["ordered"] is False and body["version"] is None
    assert store.get("flights", "t") is second


TRIP = """
name = "trip"
initiator = "trips"
[settings]
freshness = "events"
[participants.trips]
url = "http://127.0.0.1:9"
[participants.trips.status]
path = "/api/trips/{id}"
record = "trip"
state = "status"
version = "rev"
[participants.trips.events]
topic = "trips/events"
workflow_id = "trip.id"
state = "trip.status"
version = "trip.rev"
[participants.flights]
url = "http://127.0.0.1:10"
[participants.flights.status]
path = "/f?trip={id}"
record = "bookings[0]"
state = "state"
time = "updated"
[participants.flights.status.states]
held = "HELD"
released = "RELEASED"
[participants.flights.events]
topic = "airline/+"
workflow_id = "trip"
state = "state"
time = "ts"
[participants.order]
url = "http://127.0.0.1:11"
[[rules]]
state = "ANY"
"""


def _feed(store: PartStore, metrics: Metrics) -> EventFeed:
    definition = parse_definition(TRIP)
    participants = definition.participants
    return EventFeed(
        broker=BrokerURL.parse("mqtt://127.0.0.1:1"),
        prefix="saga",
        participants=frozenset(n for n, p in participants.items() if not p.mapped),
        mappers={n: Mapper(p) for n, p in participants.items() if p.events is not None},
        store=store,
        refresh=lambda name, wid: None,
        metrics=metrics,
        initiator=definition.initiator,
    )


def _events(metrics: Metrics, outcome: str) -> float:
    return metrics.events.labels(outcome)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_the_feed_subscribes_to_the_mapped_topics_and_applies_their_events() -> None:
    """A mapped participant's own JSON on its own topic becomes an event-sourced part, through its table."""
    store, metrics = PartStore(100), Metrics()
    feed = _feed(store, metrics)
    assert feed.topics == ["saga/+/+", "trips/events", "airline/+"]
    now = time.time()
    feed.handle("airline/bookings", json.dumps({"trip": "t-1", "state": "held", "ts": now - 5}).encode())
    part = store.get("flights", "t-1")
    assert part is not None and (part.state, part.source, part.order) == ("HELD", "event", "time")
    assert 4.5 <= time.monotonic() - part.observed <= 6.0  # its age is measured from the event's time
    feed.handle("airline/bookings", json.dumps({"trip": "t-1", "state": "released", "ts": now - 10}).encode())
    assert store.get("flights", "t-1").state == "HELD"  # type: ignore[union-attr]  # an earlier time: old
    feed.handle("airline/bookings", json.dumps({"trip": "t-1", "state": "released", "ts": now}).encode())
    assert store.get("flights", "t-1").history == ("HELD", "RELEASED")  # type: ignore[union-attr]
    assert (_events(metrics, "applied"), _events(metrics, "old")) == (2, 1)


def test_the_initiators_first_mapped_event_makes_the_others_known_absent() -> None:
    """Version 1 of the initiator's record is the workflow's creation: the others heard from since
    the feed came up have no part yet."""
    store, metrics = PartStore(100), Metrics()
    feed = _feed(store, metrics)
    feed._epoch = time.monotonic() - 60  # subscribed since before the event
    feed.heard = {"flights": time.monotonic()}  # heard from since: alive (order never was)
    feed.handle("trips/events", json.dumps({"trip": {"id": "t-2", "status": "REQUESTED", "rev": 1}}).encode())
    trips = store.get("trips", "t-2")
    assert trips is not None and (trips.state, trips.version) == ("REQUESTED", 1)
    absent = store.get("flights", "t-2")
    assert absent is not None and absent.state is None
    assert store.get("order", "t-2") is None  # silent so far: maybe down, so asked, not assumed
    feed.handle("trips/events", json.dumps({"trip": {"id": "t-2", "status": "REQUESTED", "rev": 1}}).encode())
    assert _events(metrics, "old") == 1  # the same version again


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"trip": "t-3"}',
        b'{"trip": "t-3", "state": "lost", "ts": 1}',
        b'{"trip": "../etc", "state": "held", "ts": 1}',
        b'{"trip": "t-3", "state": "held", "ts": "soon"}',
        b"[" * 50_000,
        b'{"trip": "t-3", "state": "held", "ts": 1, "pad": "' + b"x" * 300_000 + b'"}',
    ],
)
def test_a_mapped_event_that_does_not_map_is_counted_and_dropped(payload: bytes) -> None:
    """Nothing on a mapped topic can stop the feed or put a part in the store unless it maps."""
    store, metrics = PartStore(100), Metrics()
    feed = _feed(store, metrics)
    feed.handle("airline/bookings", payload)
    assert len(store) == 0
    assert _events(metrics, "unmapped") == 1


def test_a_contract_event_naming_a_mapped_participant_is_ignored() -> None:
    """Under the prefix, only participants that speak the contract are read: a mapped one's name is not."""
    store, metrics = PartStore(100), Metrics()
    feed = _feed(store, metrics)
    event = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "flights",
        "type": "flights.held",
        "subject": "t-4",
        "time": "2026-12-06T07:00:00Z",
        "datacontenttype": "application/json",
        "data": {"state": "HELD", "version": 1},
    }
    feed.handle("saga/flights/held", json.dumps(event).encode())
    assert store.get("flights", "t-4") is None
    assert _events(metrics, "ignored") == 1


def test_participant_def_without_a_mapping_is_read_as_the_contract_says() -> None:
    """No mapping: the contract's status API, versioned, as before."""
    spec = ParticipantDef(url="http://127.0.0.1:9")
    assert not spec.mapped and spec.versioned


def test_an_expression_that_jmespath_refuses_on_a_document_selects_nothing() -> None:
    """A function given a value of the wrong type (``length`` of a number) is a record that does
    not map (bad_response), never an exception out of a read or the event feed."""
    text = BASE.replace('state = "status"', 'state = "to_string(length(status))"')
    mapper = _mapper(text)
    assert Expression("length(@)").search(5) is None
    with pytest.raises(MappingProblem) as caught:
        mapper.read({"status": 5, "revision": 1, "updated": 1})
    assert caught.value.kind == "bad_response" and "gave nothing" in caught.value.detail
    store, metrics = PartStore(100), Metrics()
    feed = _feed(store, metrics)
    feed._mappers["flights"] = Mapper(
        parse_definition(TRIP.replace('state = "state"', 'state = "length(state)"')).participants["flights"]
    )
    feed.handle("airline/bookings", json.dumps({"trip": "t-9", "state": 7, "ts": 1}).encode())
    assert _events(metrics, "unmapped") == 1 and len(store) == 0


def test_the_document_admits_min_version_only_for_participants_whose_parts_carry_one() -> None:
    """trip.toml: flights maps no version, so the document's min_version pattern leaves it out
    (a request naming it is a 400), and a definition with no version anywhere admits none."""

    def schema(definition: Any) -> dict[str, Any]:
        params = openapi_document(definition)["paths"]["/workflows/{workflow_id}"]["get"]["parameters"]
        return next(p["schema"] for p in params if p["name"] == "min_version")

    trip = load_definition(str(files("trip_booking") / "trip.toml"))
    assert trip.versioned() == {"trips", "hotel", "payments"}
    assert schema(trip)["items"]["pattern"] == "^(hotel|payments|trips):[0-9]{1,18}$"
    unversioned = parse_definition(BASE.replace('version = "revision"\n', ""))
    assert unversioned.versioned() == frozenset()
    assert schema(unversioned) == {"type": "array", "maxItems": 0}
