"""Query strings, as both sides' servers check them: a parameter given at most once.

A query string is each parameter's values, in order (``?a=1&a=2`` is ``{"a": ["1", "2"]}``);
the aggregator's fleet queries and a participant's listing both refuse a parameter that is not
repeatable but given twice, each with its own error type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence


def given_once(
    query: Mapping[str, Sequence[str]], names: Iterable[str], error: Callable[[str], Exception]
) -> dict[str, str]:
    """The value of each of ``names`` that ``query`` gives (an absent one is left out); raises
    ``error("give NAME at most once")`` for the first of them given more than once."""
    once: dict[str, str] = {}
    for name in names:
        values = query.get(name, ())
        if len(values) > 1:
            raise error(f"give {name} at most once")
        if values:
            once[name] = values[0]
    return once
