"""The view's ETag and staleness, as built by ``build_view``."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

import pytest

from aggregator import parse_definition
from aggregator.view import Part, View, build_view, missing_part

from .factories import PAIR, make_part


def _digest(text: str) -> str:
    return f'"{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"'


def _view(parts: dict[str, Part], *, unmet: dict[str, int] | None = None, stalled: bool = False) -> View:
    return View("w-1", "pair", "ANY", None, True, parts, 0, min_version_unmet=unmet or {}, stalled=stalled)


def test_the_etag_is_a_digest_of_the_sorted_parts_unmet_versions_and_stall() -> None:
    payment, shipping = make_part("payment", 2, "AUTHORIZED"), make_part("shipping", 1, None)
    assert _view({"shipping": shipping, "payment": payment}).etag == _digest(
        "w-1|payment:2:AUTHORIZED:None|shipping:1:None:None|"
    )
    failed = missing_part("shipping", "timeout")
    assert _view(
        {"payment": payment, "shipping": failed}, unmet={"shipping": 3, "payment": 4}, stalled=True
    ).etag == (
        _digest(
            "w-1|payment:2:AUTHORIZED:None|shipping:0:None:timeout|unmet payment:4|unmet shipping:3|stalled"
        )
    )


def test_the_etag_does_not_depend_on_the_order_parts_arrived_in() -> None:
    a, b = make_part("payment", 2), make_part("shipping", 1, "SCHEDULED")
    assert _view({"payment": a, "shipping": b}).etag == _view({"shipping": b, "payment": a}).etag


@pytest.mark.parametrize("known_at", [None, lambda part: part.observed + 0.5])
def test_staleness_is_the_oldest_answered_parts_age_rounded_up(
    known_at: Callable[[Part], float] | None,
) -> None:
    now = time.monotonic()
    parts = {
        "payment": make_part("payment", observed=now - 2.0004),
        "shipping": make_part("shipping", observed=now - 0.5),
    }
    view = build_view(parse_definition(PAIR), "w-1", parts, generated_at="t", known_at=known_at)
    oldest = 2.0004 - (0.5 if known_at else 0)
    assert math.ceil(oldest * 1000) <= view.staleness_ms <= math.ceil(oldest * 1000) + 50
    unanswered = {
        "payment": missing_part("payment", "timeout"),
        "shipping": missing_part("shipping", "timeout"),
    }
    assert build_view(parse_definition(PAIR), "w-1", unanswered, generated_at="t").staleness_ms == 0
