"""How fresh one read must be: :class:`ReadOptions`, and how HTTP requests say so.

``Cache-Control: no-cache`` (or ``no-store``) asks every participant; ``max-age=N`` accepts
parts up to N seconds old; ``?timeout_ms=`` shortens the deadline; ``?min_version=P:N``
(repeatable) waits, within the deadline, until participant P's part reaches version N.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from .errors import BadReadOptions

_MAX_AGE = re.compile(r"max-age=([0-9]{1,9})")
_MIN_VERSION = re.compile(r"([a-z][a-z0-9_-]{0,63}):([0-9]{1,18})")
_TIMEOUT_MS = re.compile(r"[0-9]{1,9}")
#: Longest deadline a request may ask for, in milliseconds.
MAX_TIMEOUT_MS = 600_000
#: Most ids one batch read may name.
MAX_BATCH = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOptions:
    """How fresh a read must be (from ``Cache-Control``, ``min_version`` and ``timeout_ms``)."""

    max_age_s: float | None = None
    """Serve parts from memory up to this age (``Cache-Control: max-age``)."""
    no_cache: bool = False
    """Ask every participant (``Cache-Control: no-cache``)."""
    min_versions: Mapping[str, int] | None = None
    """Wait, within the deadline, until these parts reach these versions (read-your-writes)."""
    timeout_ms: int | None = None
    """Shorten the deadline of this read (never lengthens the configured one)."""

    @classmethod
    def from_http(
        cls,
        *,
        cache_control: str,
        timeout_ms: str | None,
        min_versions: Iterable[str],
        participants: Collection[str],
    ) -> ReadOptions:
        """Parse a request's header and query values; :class:`BadReadOptions` says what is wrong."""
        max_age: float | None = None
        no_cache = False
        for directive in (d.strip().lower() for d in cache_control.split(",")):
            if directive in ("no-cache", "no-store"):
                no_cache = True
            elif directive.startswith("max-age"):
                match = _MAX_AGE.fullmatch(directive)
                if not match:
                    raise BadReadOptions(
                        f"Cache-Control {directive[:40]!r}: max-age must be a whole number of seconds"
                    )
                max_age = float(match.group(1))
        timeout: int | None = None
        if timeout_ms is not None:
            # ASCII digits only: str.isdigit() and \d also accept digits int() refuses ("²") or that
            # no client means.
            if not _TIMEOUT_MS.fullmatch(timeout_ms) or not 1 <= int(timeout_ms) <= MAX_TIMEOUT_MS:
                raise BadReadOptions(
                    f"timeout_ms {timeout_ms[:20]!r}: expected a whole number of milliseconds, "
                    f"1 to {MAX_TIMEOUT_MS}"
                )
            timeout = int(timeout_ms)
        versions: dict[str, int] = {}
        for raw in min_versions:
            match = _MIN_VERSION.fullmatch(raw)
            if not match or match.group(1) not in participants:
                raise BadReadOptions(
                    f"min_version {raw[:80]!r}: expected PARTICIPANT:VERSION with one of {sorted(participants)}"
                    " (the participants whose parts carry a version)"
                )
            name, version = match.group(1), int(match.group(2))
            versions[name] = max(versions.get(name, 0), version)
        return cls(max_age_s=max_age, no_cache=no_cache, min_versions=versions, timeout_ms=timeout)
