"""ReadOptions.from_http: Cache-Control, timeout_ms and min_version, and what is refused."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from aggregator.errors import AggregatorError, BadReadOptions
from aggregator.options import MAX_TIMEOUT_MS, ReadOptions

PARTICIPANTS = ("order", "payment", "inventory", "shipping")


def parse(
    cache_control: str = "", timeout_ms: str | None = None, min_versions: Iterable[str] = ()
) -> ReadOptions:
    return ReadOptions.from_http(
        cache_control=cache_control,
        timeout_ms=timeout_ms,
        min_versions=min_versions,
        participants=PARTICIPANTS,
    )


def test_nothing_asked() -> None:
    assert parse() == ReadOptions(max_age_s=None, no_cache=False, min_versions={}, timeout_ms=None)


@pytest.mark.parametrize(
    ("header", "max_age", "no_cache"),
    [
        ("no-cache", None, True),
        ("no-store", None, True),
        ("NO-CACHE", None, True),
        ("max-age=0", 0.0, False),
        ("max-age=30", 30.0, False),
        ("Max-Age=999999999", 999999999.0, False),
        ("private, max-age=5", 5.0, False),
        (" max-age=5 , no-cache ", 5.0, True),
        ("max-age=5, max-age=7", 7.0, False),
        ("private, must-revalidate", None, False),
        (",,", None, False),
    ],
)
def test_cache_control(header: str, max_age: float | None, no_cache: bool) -> None:
    options = parse(cache_control=header)
    assert (options.max_age_s, options.no_cache) == (max_age, no_cache)


@pytest.mark.parametrize(
    "header",
    ["max-age", "max-age=", "max-age=abc", "max-age=-1", "max-age=1.5", "max-age = 5", "max-age=" + "9" * 10],
)
def test_bad_max_age(header: str) -> None:
    with pytest.raises(BadReadOptions, match="max-age must be a whole number"):
        parse(cache_control=header)


@pytest.mark.parametrize(
    ("raw", "value"), [("1", 1), ("250", 250), ("000007", 7), ("600000", MAX_TIMEOUT_MS)]
)
def test_timeout_ms(raw: str, value: int) -> None:
    assert parse(timeout_ms=raw).timeout_ms == value


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "0",
        "-1",
        "+5",
        "abc",
        "1.5",
        "1e3",
        " 5",
        "5 ",
        "5\n",
        "²",
        "600001",
        "9999999",
        "9" * 5000,
        "0x10",
    ],
)
def test_bad_timeout_ms(raw: str) -> None:
    with pytest.raises(BadReadOptions) as caught:
        parse(timeout_ms=raw)
    message = str(caught.value)
    assert message.startswith("timeout_ms ")
    assert f"1 to {MAX_TIMEOUT_MS}" in message
    assert len(message) < 200  # a huge value is cut short in the message


def test_bad_read_options_is_an_aggregator_error() -> None:
    assert issubclass(BadReadOptions, AggregatorError)


def test_min_versions() -> None:
    options = parse(min_versions=["order:2", "payment:1", "order:5", "order:3"])
    assert options.min_versions == {"order": 5, "payment": 1}


def test_min_version_takes_up_to_eighteen_digits() -> None:
    assert parse(min_versions=["payment:" + "9" * 18]).min_versions == {"payment": 10**18 - 1}


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "order",
        "order:",
        ":2",
        "order:-1",
        "order:x",
        "order:1.0",
        "Order:1",
        "billing:1",  # not a participant of the definition
        "order:1:2",
        "order: 1",
        "order:1\n",
        "payment:" + "9" * 19,
        "a" * 5000 + ":1",
    ],
)
def test_bad_min_version(raw: str) -> None:
    with pytest.raises(BadReadOptions) as caught:
        parse(min_versions=[raw])
    message = str(caught.value)
    assert message.startswith("min_version ")
    assert "['inventory', 'order', 'payment', 'shipping']" in message
    assert len(message) < 300


def test_one_bad_min_version_among_good_ones_refuses_the_read() -> None:
    with pytest.raises(BadReadOptions):
        parse(min_versions=["order:1", "nobody:1"])


@pytest.mark.parametrize(
    ("cache_control", "timeout_ms", "min_versions"),
    [
        pytest.param("", "\u0661\u0660\u0660", (), id="timeout_ms-arabic-indic"),
        pytest.param("", "\uff11\uff10", (), id="timeout_ms-fullwidth"),
        pytest.param("max-age=\uff11\uff10", None, (), id="max-age-fullwidth"),
        pytest.param("", None, ("payment:\u0661",), id="min_version-arabic-indic"),
    ],
)
def test_non_ascii_digits_are_refused(
    cache_control: str, timeout_ms: str | None, min_versions: tuple[str, ...]
) -> None:
    """Only ASCII digits: ``\\d`` alone would also take other scripts' decimal digits."""
    with pytest.raises(BadReadOptions):
        parse(cache_control=cache_control, timeout_ms=timeout_ms, min_versions=min_versions)
