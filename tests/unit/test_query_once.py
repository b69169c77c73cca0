"""A query parameter given at most once: one check (:func:`contract.given_once`), each side's error."""

from __future__ import annotations

import pytest

from aggregator import load_definition
from aggregator._fleet import parse_query
from aggregator.errors import BadRequest
from contract import given_once
from participants._listing import BadQuery, parse_listing


class Refused(Exception):
    pass


def test_each_name_given_once_is_taken_and_the_others_left_out() -> None:
    query = {"a": ["1"], "b": [], "c": ["3"], "many": ["x", "y"]}
    assert given_once(query, ("a", "b", "c", "absent"), Refused) == {"a": "1", "c": "3"}
    assert given_once(query, (), Refused) == {}


def test_the_first_name_given_twice_is_refused_with_the_callers_error() -> None:
    query = {"a": ["1", "1"], "b": ["2", "3"]}
    with pytest.raises(Refused, match=r"^give a at most once$"):
        given_once(query, ("a", "b"), Refused)
    with pytest.raises(Refused, match=r"^give b at most once$"):
        given_once(query, ("b", "a"), Refused)
    assert given_once(query, ("c",), Refused) == {}  # only the names asked about are checked


def test_both_sides_keep_their_error_types_and_messages() -> None:
    """The aggregator's fleet query answers its BadRequest, a participant's listing its BadQuery."""
    with pytest.raises(BadRequest, match="give cursor at most once"):
        parse_query({"state": ["IN_PROGRESS"], "cursor": ["a", "b"]}, load_definition(), key=b"k")
    with pytest.raises(BadQuery, match="give after at most once"):
        parse_listing({"after": ["00", "01"]})
    assert parse_listing({"limit": ["7"], "state": ["A", "B"]}).limit == 7
