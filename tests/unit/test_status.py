"""StatusBody / HistoryEntry / BatchBody: the participant status answer, as built and as parsed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from contract import BATCH_READ, STATUS_READ, BatchBody, HistoryEntry, StatusBody


def body(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "participant": "payment",
        "workflow_id": "ord-42",
        "state": "REFUNDED",
        "version": 2,
        "updated_at": "2026-11-25T12:00:01.000000Z",
        "history": [
            {"state": "AUTHORIZED", "version": 1, "at": "2026-11-25T12:00:00.000000Z"},
            {"state": "REFUNDED", "version": 2, "at": "2026-11-25T12:00:01.000000Z"},
        ],
        "data": {"amount": 42.5, "currency": "EUR"},
    }
    base.update(changes)
    return base


def errors(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """(location, error type) of each problem, validating from bytes as the aggregator does."""
    with pytest.raises(ValidationError) as caught:
        StatusBody.model_validate_json(json.dumps(raw))
    return [(".".join(str(p) for p in e["loc"]), e["type"]) for e in caught.value.errors()]


def test_good_body() -> None:
    status = StatusBody.model_validate_json(json.dumps(body()))
    assert (status.participant, status.workflow_id, status.state, status.version) == (
        "payment",
        "ord-42",
        "REFUNDED",
        2,
    )
    assert status.history == [
        HistoryEntry(state="AUTHORIZED", version=1, at="2026-11-25T12:00:00.000000Z"),
        HistoryEntry(state="REFUNDED", version=2, at="2026-11-25T12:00:01.000000Z"),
    ]
    assert status.data == {"amount": 42.5, "currency": "EUR"}
    assert StatusBody.model_validate(body()) == status


def test_minimal_body_has_empty_history_and_data() -> None:
    raw = body()
    del raw["history"], raw["data"]
    status = StatusBody.model_validate(raw)
    assert (status.history, status.data) == ([], {})


def test_unknown_fields_are_ignored() -> None:
    status = StatusBody.model_validate(body(extra_field="x", schema_version=3))
    assert "extra_field" not in status.model_dump()


def test_round_trip() -> None:
    status = StatusBody.model_validate(body())
    assert StatusBody.model_validate_json(status.model_dump_json()) == status


def test_frozen() -> None:
    status = StatusBody.model_validate(body())
    with pytest.raises(ValidationError):
        status.version = 3
    assert status.version == 2


@pytest.mark.parametrize("field", ["participant", "workflow_id", "state", "version", "updated_at"])
def test_missing_field(field: str) -> None:
    raw = body()
    del raw[field]
    assert errors(raw) == [(field, "missing")]


WRONG: list[tuple[dict[str, Any], str, str]] = [
    ({"participant": ""}, "participant", "string_too_short"),
    ({"participant": 7}, "participant", "string_type"),
    ({"workflow_id": "ord 42"}, "workflow_id", "string_pattern_mismatch"),
    ({"workflow_id": "a/b"}, "workflow_id", "string_pattern_mismatch"),
    ({"workflow_id": ""}, "workflow_id", "string_pattern_mismatch"),
    ({"workflow_id": 42}, "workflow_id", "string_type"),
    ({"state": None}, "state", "string_type"),
    ({"state": ""}, "state", "string_too_short"),
    ({"state": "S" * 65}, "state", "string_too_long"),
    ({"version": "2"}, "version", "int_type"),
    ({"version": 2.0}, "version", "int_type"),
    ({"version": True}, "version", "int_type"),
    ({"version": 0}, "version", "greater_than_equal"),
    ({"version": None}, "version", "int_type"),
    ({"updated_at": 0}, "updated_at", "string_type"),
    ({"updated_at": "x" * 65}, "updated_at", "string_too_long"),
    ({"history": {}}, "history", "list_type"),
    ({"history": [{"state": "A", "version": 1}]}, "history.0.at", "missing"),
    ({"history": [{"state": "A", "version": "1", "at": "t"}]}, "history.0.version", "int_type"),
    ({"history": ["AUTHORIZED"]}, "history.0", "model_type"),
    ({"data": []}, "data", "dict_type"),
]


@pytest.mark.parametrize(("changes", "location", "kind"), WRONG)
def test_wrong_types_and_values(changes: dict[str, Any], location: str, kind: str) -> None:
    assert errors(body(**changes)) == [(location, kind)]


def test_dot_segment_workflow_ids_are_refused() -> None:
    assert [loc for loc, _ in errors(body(workflow_id=".."))] == ["workflow_id"]
    assert [loc for loc, _ in errors(body(workflow_id="."))] == ["workflow_id"]


def test_history_is_bounded() -> None:
    entry = {"state": "A", "version": 1, "at": "t"}
    assert len(StatusBody.model_validate(body(history=[entry] * 10_000)).history) == 10_000
    assert errors(body(history=[entry] * 10_001)) == [("history", "too_long")]


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"null", b"\xff\xfe", b"[" * 30000 + b"]" * 30000, b'{"version": ' + b"9" * 5000 + b"}"],
)
def test_hostile_bytes_raise_validation_error(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        StatusBody.model_validate_json(payload)


def test_batch_body() -> None:
    batch = BatchBody.model_validate_json(json.dumps({"statuses": [body()], "missing": ["ord-7"]}))
    assert [s.workflow_id for s in batch.statuses] == ["ord-42"]
    assert batch.missing == ["ord-7"]
    assert BatchBody.model_validate({"statuses": []}).missing == []
    with pytest.raises(ValidationError):
        BatchBody.model_validate({"statuses": [body(version=0)]})
    with pytest.raises(ValidationError):
        BatchBody.model_validate({"statuses": [], "missing": [1]})


def _locations(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in exc.errors()]


@pytest.mark.parametrize(("changes", "location", "kind"), WRONG)
def test_the_read_form_refuses_what_the_model_refuses(
    changes: dict[str, Any], location: str, kind: str
) -> None:
    """The aggregator's read path (typed dicts) is exactly as strict as the contract's model."""
    with pytest.raises(ValidationError) as caught:
        STATUS_READ.validate_json(json.dumps(body(**changes)))
    assert _locations(caught.value) == [location]
    with pytest.raises(ValidationError) as caught:
        BATCH_READ.validate_json(json.dumps({"statuses": [body(), body(**changes)]}))
    assert _locations(caught.value) == [f"statuses.1.{location}"]


@pytest.mark.parametrize("field", ["participant", "workflow_id", "state", "version", "updated_at"])
def test_the_read_form_needs_what_the_model_needs(field: str) -> None:
    raw = body()
    del raw[field]
    with pytest.raises(ValidationError) as caught:
        STATUS_READ.validate_json(json.dumps(raw))
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((field,), "missing")]


def test_the_read_form_reads_what_the_model_reads() -> None:
    """Same values, unknown fields ignored, history and data optional, dot segments and long histories refused."""
    raw = body(extra_field="x")
    read, model = STATUS_READ.validate_json(json.dumps(raw)), StatusBody.model_validate_json(json.dumps(raw))
    assert "extra_field" not in read
    assert {k: v for k, v in read.items() if k not in ("history", "data")} == model.model_dump(
        exclude={"history", "data"}
    )
    assert read.get("history") == [h.model_dump() for h in model.history]
    assert read.get("data") == model.data
    minimal = body()
    del minimal["history"], minimal["data"]
    assert "history" not in STATUS_READ.validate_json(json.dumps(minimal))
    for bad in (body(workflow_id=".."), body(workflow_id=".")):
        with pytest.raises(ValidationError):
            STATUS_READ.validate_json(json.dumps(bad))
    entry = {"state": "A", "version": 1, "at": "t"}
    assert len(STATUS_READ.validate_json(json.dumps(body(history=[entry] * 10_000)))["history"]) == 10_000
    with pytest.raises(ValidationError):
        STATUS_READ.validate_json(json.dumps(body(history=[entry] * 10_001)))
    batch = BATCH_READ.validate_json(json.dumps({"statuses": [body()], "missing": ["ord-7"]}))
    assert [s["workflow_id"] for s in batch["statuses"]] == ["ord-42"]
    with pytest.raises(ValidationError):
        BATCH_READ.validate_json(json.dumps({"statuses": [], "missing": [1]}))
    with pytest.raises(ValidationError):
        BATCH_READ.validate_json(json.dumps({"missing": []}))


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"null", b"\xff\xfe", b"[" * 30000 + b"]" * 30000, b'{"version": ' + b"9" * 5000 + b"}"],
)
def test_the_read_form_refuses_hostile_bytes(payload: bytes) -> None:
    for adapter in (STATUS_READ, BATCH_READ):
        with pytest.raises(ValidationError):
            adapter.validate_json(payload)
