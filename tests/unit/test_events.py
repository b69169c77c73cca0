"""parse_event is strict and total: any payload is a CloudEvent or an InvalidEvent, never another error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract import MAX_EVENT_BYTES, CloudEvent, InvalidEvent, new_event, parse_event, topic_for

PREFIX = "saga"
TOPIC = "saga/payment/authorized"


def event_dict(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "0b6f7f8e-7d43-4b8e-9a51-2d7f2c9d7d11",
        "source": "payment",
        "type": "payment.authorized",
        "subject": "ord-42",
        "time": "2026-11-25T12:00:00.000000Z",
        "datacontenttype": "application/json",
        "data": {"state": "AUTHORIZED", "version": 2, "amount": 42.5},
    }
    base.update(changes)
    return base


def encode(raw: Any) -> bytes:
    return json.dumps(raw).encode()


def parse(payload: bytes, topic: str = TOPIC, accepted: frozenset[str] | None = None) -> CloudEvent:
    return parse_event(topic, payload, prefix=PREFIX, accepted=accepted)


def invalid(payload: bytes, topic: str = TOPIC, accepted: frozenset[str] | None = None) -> InvalidEvent:
    """The InvalidEvent parsing raises (any other exception fails the test)."""
    with pytest.raises(InvalidEvent) as caught:
        parse(payload, topic, accepted)
    assert caught.value.topic == topic
    assert caught.value.reason
    return caught.value


# --- valid events -----------------------------------------------------------------------------


def test_a_valid_event_parses() -> None:
    event = parse(encode(event_dict()))
    assert (event.source, event.type, event.subject) == ("payment", "payment.authorized", "ord-42")
    assert (event.data.state, event.data.version) == ("AUTHORIZED", 2)
    assert event.domain == {"amount": 42.5}
    assert event.traceparent is None


def test_a_new_event_round_trips() -> None:
    made = new_event(
        source="payment", name="authorized", subject="ord-42", state="AUTHORIZED", version=1, domain={"n": 1}
    )
    topic = topic_for(PREFIX, made.type)
    assert topic == TOPIC
    parsed = parse(made.to_json(), topic, accepted=frozenset({"payment.authorized"}))
    assert parsed == made
    assert parsed.domain == {"n": 1}


def test_payload_at_exactly_the_size_limit_is_accepted() -> None:
    payload = encode(event_dict())
    payload += b" " * (MAX_EVENT_BYTES - len(payload))
    assert len(payload) == MAX_EVENT_BYTES
    assert parse(payload).data.version == 2


# --- hostile payloads -------------------------------------------------------------------------


def test_deeply_nested_array() -> None:
    error = invalid(b"[" * 30000 + b"]" * 30000)
    assert "RecursionError" in error.reason


def test_deeply_nested_value_inside_an_object() -> None:
    assert "RecursionError" in invalid(b'{"data": ' + b"[" * 30000 + b"]" * 30000 + b"}").reason


def test_five_thousand_digit_integer() -> None:
    assert "not acceptable JSON" in invalid(b"9" * 5000).reason


def test_five_thousand_digit_integer_inside_the_event() -> None:
    payload = encode(event_dict()).replace(b'"version": 2', b'"version": ' + b"7" * 5000)
    assert "not acceptable JSON" in invalid(payload).reason


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe{}", b'{"id": "\xc3\x28"}', b"\xed\xa0\x80", encode(event_dict())[:-1] + b"\x80}"],
)
def test_invalid_utf8(payload: bytes) -> None:
    assert invalid(payload).reason.startswith("payload is not UTF-8")


@pytest.mark.parametrize("payload", [b"", b"{", b"{'a': 1}", b'{"a": 1,}', b"nul", b"\x00"])
def test_not_json(payload: bytes) -> None:
    assert invalid(payload).reason.startswith("payload is not JSON")


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"[]", "list"),
        (b"[1, 2]", "list"),
        (b'"a string"', "str"),
        (b"42", "int"),
        (b"4.2", "float"),
        (b"NaN", "float"),
        (b"true", "bool"),
        (b"null", "NoneType"),
    ],
)
def test_non_object_json(payload: bytes, kind: str) -> None:
    assert invalid(payload).reason == f"payload is a JSON {kind}, not an object"


def test_oversize_payload() -> None:
    payload = encode(event_dict())
    payload += b" " * (MAX_EVENT_BYTES + 1 - len(payload))
    assert "exceeds the 262144 byte limit" in invalid(payload).reason


def test_oversize_garbage_is_refused_before_decoding() -> None:
    assert "exceeds" in invalid(b"[" * (MAX_EVENT_BYTES * 2)).reason


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"specversion": 1.0}, "specversion"),
        ({"id": ""}, "id"),
        ({"id": 7}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": "\ud800"}, "id"),  # a lone surrogate, escaped in valid JSON
        ({"source": None}, "source"),
        ({"type": ["payment.authorized"]}, "type"),
        ({"subject": "ord 42"}, "subject"),
        ({"subject": "ord/42"}, "subject"),
        ({"subject": "ord-42\n"}, "subject"),
        ({"subject": ".."}, "subject"),
        ({"subject": "x" * 129}, "subject"),
        ({"subject": 42}, "subject"),
        ({"time": ""}, "time"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"traceparent": "0" * 56}, "traceparent"),
        ({"data": None}, "data"),
        ({"data": []}, "data"),
        ({"data": {"state": "AUTHORIZED"}}, "data.version"),
        ({"data": {"version": 1}}, "data.state"),
        ({"data": {"state": "AUTHORIZED", "version": "2"}}, "data.version"),
        ({"data": {"state": "AUTHORIZED", "version": 2.0}}, "data.version"),
        ({"data": {"state": "AUTHORIZED", "version": True}}, "data.version"),
        ({"data": {"state": "AUTHORIZED", "version": 0}}, "data.version"),
        ({"data": {"state": "AUTHORIZED", "version": -1}}, "data.version"),
        ({"data": {"state": "", "version": 1}}, "data.state"),
        ({"data": {"state": 5, "version": 1}}, "data.state"),
        ({"data": {"state": "S" * 65, "version": 1}}, "data.state"),
    ],
)
def test_wrong_fields(changes: dict[str, Any], field: str) -> None:
    reason = invalid(encode(event_dict(**changes))).reason
    assert reason.startswith("not a valid CloudEvent: ")
    assert f"{field}: " in reason


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type", "subject", "time", "data"])
def test_missing_fields(missing: str) -> None:
    raw = event_dict()
    del raw[missing]
    assert f"{missing}: Field required" in invalid(encode(raw)).reason


def test_many_errors_are_summarised() -> None:
    reason = invalid(b"{}").reason
    assert "; and 2 more" in reason  # 7 required fields, 5 shown


def test_oversize_reason_stays_short() -> None:
    payload = encode(event_dict(id="x" * 100_000))
    error = invalid(payload)
    assert len(error.reason) < 1000


# --- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "saga",
        "saga/payment",
        "saga/payment/authorized/extra",
        "other/payment/authorized",
        "SAGA/payment/authorized",
        "saga/Payment/authorized",
        "saga/1payment/authorized",
        "saga//authorized",
        "/saga/payment/authorized",
    ],
)
def test_wrong_topic(topic: str) -> None:
    assert invalid(encode(event_dict()), topic).reason == "topic is not saga/{producer}/{event}"


def test_type_must_match_the_topic() -> None:
    reason = invalid(encode(event_dict()), "saga/payment/declined").reason
    assert reason == "type 'payment.authorized' does not match topic (expected 'payment.declined')"


def test_source_must_match_the_topic_producer() -> None:
    payload = encode(event_dict(source="order"))
    assert invalid(payload).reason == "source 'order' does not match topic producer 'payment'"


def test_another_producer_cannot_speak_for_payment() -> None:
    payload = encode(event_dict(source="order", type="order.created"))
    assert "does not match topic" in invalid(payload, "saga/payment/authorized").reason


def test_unaccepted_type() -> None:
    reason = invalid(encode(event_dict()), accepted=frozenset({"order.created"})).reason
    assert reason == "unknown event type 'payment.authorized'"


def test_accepted_type() -> None:
    assert (
        parse(encode(event_dict()), accepted=frozenset({"payment.authorized"})).type == "payment.authorized"
    )


def test_invalid_event_message_names_the_topic() -> None:
    error = invalid(b"[]")
    assert str(error) == f"{TOPIC}: payload is a JSON list, not an object"


def test_producer_with_a_trailing_newline_is_refused() -> None:
    payload = encode(event_dict(source="payment\n", type="payment\n.authorized"))
    invalid(payload, "saga/payment\n/authorized")
