"""What the pieces of an :class:`~aggregator._fanout.Upstream` pass each other: flights, and a way to start tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from .errors import PartFailure
from .view import Part

Landed = Part | PartFailure | None
"""What a call brought for one part: the part, its failure, or None if the call itself broke."""

Flight = asyncio.Future[Landed]
"""A part's call as its readers see it: what landed, once."""

#: What a reader got when its deadline came before its flight landed.
DEADLINE_REACHED = PartFailure("timeout", "request deadline reached", participant="")


class Spawn(Protocol):
    """Starts a background task (the aggregator's :meth:`~aggregator._background.Background.spawn`)."""

    def __call__(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[Any]: ...
