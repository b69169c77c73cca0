"""Builders shared by the unit tests."""

from __future__ import annotations

from aggregator.schema import Source
from aggregator.view import Part


def make_part(
    participant: str = "payment",
    version: int = 1,
    state: str | None = "AUTHORIZED",
    *,
    observed: float = 100.0,
    source: Source = "live",
    history: tuple[str, ...] = (),
) -> Part:
    """A part with the fields a test cares about, the rest filled in."""
    return Part(
        participant=participant,
        state=state,
        version=version,
        updated_at="2026-01-01T00:00:00.000000Z" if state is not None else None,
        observed=observed,
        observed_at="2026-01-01T00:00:00.000000Z",
        source=source,
        history=history,
    )


#: A definition of two participants, payment and shipping, and one rule that matches anything.
PAIR = """
name = "pair"
[participants.payment]
url = "http://payment"
[participants.shipping]
url = "http://shipping"
[[rules]]
state = "ANY"
"""
