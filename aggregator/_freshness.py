"""Freshness policies: when a remembered part may be served without asking its participant.

A policy looks at the part the store keeps (or None) and the read's options, and answers with
a :class:`Lookup`: serve it (``HIT``), serve it and refresh it in the background
(``STALE_WHILE_REVALIDATE``), or ask the participant (``MISS``, or ``REVALIDATE`` for a part
confirmed before the event feed's last outage). It also says whether a failed fetch may be
answered with the last copy (stale-if-error). The three modes of the definition's
``settings.freshness`` are the three implementations below; :func:`policy_for` picks one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from .definition import Settings
from .options import ReadOptions
from .view import Part


class Lookup(StrEnum):
    """What a policy decided for one part (the value is the metric label)."""

    HIT = "hit"
    MISS = "miss"
    REVALIDATE = "revalidate"
    STALE_WHILE_REVALIDATE = "stale_while_revalidate"

    @property
    def serves(self) -> bool:
        """Whether the remembered part is served."""
        return self in _SERVES


_SERVES = frozenset((Lookup.HIT, Lookup.STALE_WHILE_REVALIDATE))


class FeedState(Protocol):
    """What a policy needs to know of an event feed."""

    @property
    def healthy(self) -> bool:
        """Whether the subscription is up right now."""

    @property
    def epoch(self) -> float:
        """``time.monotonic()`` when the current subscription came up."""


class Freshness(Protocol):
    """A freshness policy (see the module docstring)."""

    def lookup(self, kept: Part | None, options: ReadOptions, now: float) -> Lookup:
        """May ``kept`` be served at monotonic time ``now``?"""

    def may_serve(self, options: ReadOptions) -> bool:
        """Whether :meth:`lookup` can answer anything but ``MISS`` to a read with these options
        (if not, the read asks every participant without looking at the store)."""

    def stale_if_error(self, kept: Part | None, now: float) -> bool:
        """May ``kept`` be served, marked stale, because its participant just failed?"""

    @property
    def pushed(self) -> bool:
        """Whether changes arrive by themselves right now (a watch need not poll)."""

    @property
    def degraded(self) -> str | None:
        """Why the configured policy is not in force right now, if it is not."""


def _explicit(kept: Part, options: ReadOptions, now: float) -> Lookup | None:
    """What the request's own ``Cache-Control`` decides, if it says anything."""
    if options.no_cache:
        return Lookup.MISS
    if options.max_age_s is not None:
        return Lookup.HIT if now - kept.observed <= options.max_age_s else Lookup.MISS
    return None


class OnDemand:
    """Every read asks every participant, unless the request itself accepts an age (``max-age``)."""

    pushed = False
    degraded = None

    def lookup(self, kept: Part | None, options: ReadOptions, now: float) -> Lookup:
        """Serve only what ``max-age`` accepts."""
        if kept is None:
            return Lookup.MISS
        return _explicit(kept, options, now) or Lookup.MISS

    def may_serve(self, options: ReadOptions) -> bool:
        """Only to a request that accepts an age."""
        return options.max_age_s is not None and not options.no_cache

    def stale_if_error(self, kept: Part | None, now: float) -> bool:
        """Never: a view in this mode shows what the participants say now, or their errors."""
        return False


class Ttl:
    """Parts are served for ``ttl_ms``, then for ``stale_while_revalidate_ms`` while refreshed in the background."""

    pushed = False
    degraded = None

    def __init__(self, settings: Settings) -> None:
        self._ttl_s = settings.ttl_ms / 1000
        self._swr_s = settings.stale_while_revalidate_ms / 1000
        self._if_error_s = (settings.ttl_ms + settings.stale_if_error_ms) / 1000

    def lookup(self, kept: Part | None, options: ReadOptions, now: float) -> Lookup:
        """Within the TTL a hit; within the revalidation window a hit refreshed in the background."""
        if kept is None:
            return Lookup.MISS
        explicit = _explicit(kept, options, now)
        if explicit is not None:
            return explicit
        age = now - kept.observed
        if age <= self._ttl_s:
            return Lookup.HIT
        if age <= self._ttl_s + self._swr_s:
            return Lookup.STALE_WHILE_REVALIDATE
        return Lookup.MISS

    def may_serve(self, options: ReadOptions) -> bool:
        """Unless the request says ``no-cache``."""
        return not options.no_cache

    def stale_if_error(self, kept: Part | None, now: float) -> bool:
        """Within ``ttl_ms + stale_if_error_ms`` of its observation."""
        return kept is not None and kept.answered and now - kept.observed <= self._if_error_s


class Events:
    """The participants' events keep parts fresh; while the feed is down, :class:`Ttl` stands in.

    A participant that publishes no events the feed can read (one read through a mapping
    without an ``events`` section) is kept fresh by :class:`Ttl` all the time.
    """

    def __init__(self, settings: Settings, feed: FeedState, *, silent: frozenset[str] = frozenset()) -> None:
        self._ttl = Ttl(settings)
        self._feed = feed
        self._silent = silent

    @property
    def pushed(self) -> bool:
        """While the feed is up."""
        return self._feed.healthy

    @property
    def degraded(self) -> str | None:
        """While the feed is down."""
        if self._feed.healthy:
            return None
        return "event feed down: serving with ttl freshness until the broker is back"

    def lookup(self, kept: Part | None, options: ReadOptions, now: float) -> Lookup:
        """A part confirmed since the subscription came up cannot have missed a change (it would
        have arrived as an event), whatever its age; one confirmed before may have."""
        if kept is None or not self._feed.healthy or kept.participant in self._silent:
            return self._ttl.lookup(kept, options, now)
        if kept.learnt < self._feed.epoch:
            return Lookup.MISS if options.no_cache else Lookup.REVALIDATE
        return _explicit(kept, options, now) or Lookup.HIT

    def may_serve(self, options: ReadOptions) -> bool:
        """Unless the request says ``no-cache``."""
        return not options.no_cache

    def stale_if_error(self, kept: Part | None, now: float) -> bool:
        """As in :class:`Ttl`."""
        return self._ttl.stale_if_error(kept, now)


def policy_for(
    settings: Settings, feed: FeedState | None, *, silent: frozenset[str] = frozenset()
) -> Freshness:
    """The policy of ``settings.freshness`` (``events`` needs the feed; ``silent`` participants
    publish nothing it can read)."""
    if settings.freshness == "events":
        if feed is None:
            raise ValueError("the events policy needs an event feed")
        return Events(settings, feed, silent=silent)
    if settings.freshness == "ttl":
        return Ttl(settings)
    return OnDemand()
