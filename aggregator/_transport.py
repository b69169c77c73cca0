"""The seam between the aggregator and the network: one request in, one answer (or one error) out.

A :class:`Transport` makes one HTTP request and gives back the status, the headers and the
body, whole, never more than ``max_bytes``; every way a request can fail is one
:class:`TransportError` with a ``kind``. Redirects are not followed: only the definition's URLs
are ever called. What an answer means (a 404, a 5xx, a body that is not a status) is the
caller's business (:class:`~aggregator._client.ParticipantClient`), not the transport's.

The aggregator opens its own :class:`~aggregator._http1.Http1Pool`; an application that gives
its ``aiohttp.ClientSession`` gets :class:`~aggregator._aiohttp.AiohttpTransport` around it; a
test can give anything that has these two methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal, Protocol

from .errors import AggregatorError

TransportErrorKind = Literal["unavailable", "bad_response", "timeout"]


class TransportError(AggregatorError):
    """A request failed: ``unavailable`` (no answer), ``bad_response`` (an answer refused: too
    large, not HTTP) or ``timeout`` (a timeout of the transport's own)."""

    def __init__(self, kind: TransportErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: TransportErrorKind = kind


class Transport(Protocol):
    """Makes requests to participants (httpx's ``BaseTransport`` is the model)."""

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], *, max_bytes: int
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request: status, headers (looked up case-insensitively) and the whole body.

        Raises :class:`TransportError`, whatever went wrong, and for a body over ``max_bytes``.
        """
        ...

    async def aclose(self) -> None:
        """Release what the transport holds (connections); a transport given by its owner stays open."""
        ...


class RawHeaders(Mapping[str, str]):
    """Answer headers as they arrived, decoded (latin-1) only when looked up, case-insensitively.

    Nearly every answer's headers go unread: keeping the raw pairs costs less than a dict.
    A name given more than once reads as its first value.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        wanted = name.lower().encode("latin-1")
        for key, value in self._raw:
            if key.lower() == wanted:
                return value.decode("latin-1")
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        seen: set[bytes] = set()
        for key, _ in self._raw:
            lowered = key.lower()
            if lowered not in seen:
                seen.add(lowered)
                yield key.decode("latin-1")

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._raw})
