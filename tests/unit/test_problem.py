"""The one error table and the one bearer check both servers answer from (contract.problem, contract.auth)."""

from __future__ import annotations

import json

import pytest

from aggregator import BadReadOptions, BadRequest, NoParticipantAnswered, NotOpen, TooManyWatchers
from aggregator._problems import PROBLEMS, status_for
from contract import PROBLEM_SCHEMA, ErrorTable, Problem, bearer_matches


class _Base(Exception):
    pass


class _Child(_Base):
    pass


class _Grandchild(_Child):
    pass


def test_the_nearest_registered_base_class_answers() -> None:
    table = ErrorTable()
    table.add(_Base, lambda exc: Problem(400, f"base: {exc}"))
    table.add(_Child, lambda exc: Problem(409, f"child: {exc}"))
    assert table.problem_for(_Base("a")) == Problem(400, "base: a")
    assert table.problem_for(_Grandchild("b")) == Problem(409, "child: b")
    assert table.problem_for(ValueError("c")) is None


def test_a_problem_body_has_every_member_the_schema_requires() -> None:
    body = json.loads(Problem(503, "down", extensions={"errors": {"payment": "timeout"}}).body())
    assert body == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "down",
        "errors": {"payment": "timeout"},
    }
    assert set(PROBLEM_SCHEMA["required"]) <= set(body)


def test_the_aggregator_table_answers_each_error_with_its_status_and_context() -> None:
    assert status_for(BadRequest("x")) == 400
    assert status_for(BadReadOptions("x")) == 400  # a subclass answers as its base
    assert status_for(NotOpen("closed")) == 503
    assert status_for(RuntimeError("not ours")) == 500
    failed = PROBLEMS.problem_for(NoParticipantAnswered("ord-1", {"payment": "timeout"}))
    assert failed is not None
    assert failed.extensions == {"workflow_id": "ord-1", "errors": {"payment": "timeout"}}
    busy = PROBLEMS.problem_for(TooManyWatchers(3))
    assert busy is not None and busy.status == 503 and busy.headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        (["Bearer s3cret"], True),
        (["bearer s3cret"], True),  # the scheme in any case
        (["  Bearer   s3cret  "], True),
        (["Bearer s3cre"], False),
        (["Bearer s3cret", "Bearer s3cret"], False),  # two headers: refused, not one chosen
        (["Bearer wrong", "Bearer s3cret"], False),
        ([], False),
        (["Basic s3cret"], False),
        (["Bearer"], False),
        (["Bearer s3cret\udcff"], False),  # undecodable bytes kept as surrogates
    ],
)
def test_bearer_matches_exactly_one_header_with_the_token(values: list[str], ok: bool) -> None:
    assert bearer_matches(values, "s3cret") is ok
