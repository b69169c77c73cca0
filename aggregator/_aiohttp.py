"""A :class:`~aggregator._transport.Transport` over an ``aiohttp.ClientSession`` the application gave.

A gateway that has its own session (its proxies, TLS settings, tracing) passes it to
``Aggregator(definition, session=...)``; every participant call goes through it, and it is
left open: it belongs to whoever made it. aiohttp's errors are translated here, at the
boundary, into :class:`~aggregator._transport.TransportError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from ._transport import TransportError


class AiohttpTransport:
    """Requests through ``session`` (redirects not followed, bodies bounded); never closes it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], *, max_bytes: int
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request: status, headers and the whole body (at most ``max_bytes``), or :class:`TransportError`."""
        try:
            async with self._session.request(method, url, headers=headers, allow_redirects=False) as resp:
                return resp.status, resp.headers, await _read_bounded(resp, max_bytes)
        except TimeoutError as exc:  # the session's own timeouts (before OSError: it is one)
            raise TransportError("timeout", str(exc) or "the session's timeout passed") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportError("unavailable", str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        """Nothing to release: the session stays open for its owner."""


async def _read_bounded(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole body, however many pieces it arrives in, but never more than ``max_bytes``."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise TransportError("bad_response", f"answer larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise TransportError("bad_response", f"answer larger than {max_bytes} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
