"""Freshness policies (on-demand, ttl, events), the Lookup enum and ``policy_for``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aggregator._freshness import Events, Lookup, OnDemand, Ttl, policy_for
from aggregator.definition import Settings
from aggregator.options import ReadOptions

from .factories import make_part

# ttl 1 s, then 0.5 s stale-while-revalidate; stale-if-error up to ttl + 2 s.
SETTINGS = Settings(ttl_ms=1000, stale_while_revalidate_ms=500, stale_if_error_ms=2000)
PLAIN = ReadOptions()
NO_CACHE = ReadOptions(no_cache=True)
T0 = 100.0


@dataclass
class Feed:
    healthy: bool = True
    epoch: float = 50.0


def test_lookup_values_are_the_metric_labels() -> None:
    assert [lookup.value for lookup in Lookup] == ["hit", "miss", "revalidate", "stale_while_revalidate"]
    assert Lookup("hit") is Lookup.HIT


def test_only_hit_and_stale_while_revalidate_serve() -> None:
    assert {lookup for lookup in Lookup if lookup.serves} == {Lookup.HIT, Lookup.STALE_WHILE_REVALIDATE}


class TestOnDemand:
    policy = OnDemand()

    def test_flags(self) -> None:
        assert self.policy.pushed is False
        assert self.policy.degraded is None

    def test_misses_without_max_age(self) -> None:
        assert self.policy.lookup(None, PLAIN, T0) is Lookup.MISS
        assert self.policy.lookup(make_part(observed=T0), PLAIN, T0) is Lookup.MISS

    def test_max_age_accepts_a_young_enough_part(self) -> None:
        options = ReadOptions(max_age_s=5)
        part = make_part(observed=T0)
        assert self.policy.lookup(part, options, T0 + 5) is Lookup.HIT
        assert self.policy.lookup(part, options, T0 + 5.001) is Lookup.MISS
        assert self.policy.lookup(None, options, T0) is Lookup.MISS

    def test_no_cache_wins_over_max_age(self) -> None:
        options = ReadOptions(max_age_s=5, no_cache=True)
        assert self.policy.lookup(make_part(observed=T0), options, T0) is Lookup.MISS

    def test_never_stale_if_error(self) -> None:
        assert self.policy.stale_if_error(make_part(observed=T0), T0) is False
        assert self.policy.stale_if_error(None, T0) is False


class TestTtl:
    policy = Ttl(SETTINGS)

    def test_flags(self) -> None:
        assert self.policy.pushed is False
        assert self.policy.degraded is None

    @pytest.mark.parametrize(
        ("age", "expected"),
        [
            (0.0, Lookup.HIT),
            (1.0, Lookup.HIT),
            (1.001, Lookup.STALE_WHILE_REVALIDATE),
            (1.5, Lookup.STALE_WHILE_REVALIDATE),
            (1.501, Lookup.MISS),
            (60.0, Lookup.MISS),
        ],
    )
    def test_by_age(self, age: float, expected: Lookup) -> None:
        assert self.policy.lookup(make_part(observed=T0), PLAIN, T0 + age) is expected

    def test_nothing_kept_misses(self) -> None:
        assert self.policy.lookup(None, PLAIN, T0) is Lookup.MISS

    def test_no_cache_misses_even_a_fresh_part(self) -> None:
        assert self.policy.lookup(make_part(observed=T0), NO_CACHE, T0) is Lookup.MISS

    def test_max_age_overrides_the_ttl_both_ways(self) -> None:
        part = make_part(observed=T0)
        assert self.policy.lookup(part, ReadOptions(max_age_s=10), T0 + 9) is Lookup.HIT
        assert self.policy.lookup(part, ReadOptions(max_age_s=0), T0 + 0.5) is Lookup.MISS

    def test_stale_if_error_within_ttl_plus_window_for_answered_parts(self) -> None:
        part = make_part(observed=T0)
        assert self.policy.stale_if_error(part, T0 + 3.0) is True
        assert self.policy.stale_if_error(part, T0 + 3.001) is False
        assert self.policy.stale_if_error(None, T0) is False
        unanswered = make_part(state=None, version=0, observed=T0, source="none")
        assert self.policy.stale_if_error(unanswered, T0) is False

    def test_zero_windows(self) -> None:
        policy = Ttl(Settings(ttl_ms=0, stale_while_revalidate_ms=0, stale_if_error_ms=0))
        part = make_part(observed=T0)
        assert policy.lookup(part, PLAIN, T0) is Lookup.HIT
        assert policy.lookup(part, PLAIN, T0 + 0.001) is Lookup.MISS
        assert policy.stale_if_error(part, T0 + 0.001) is False


class TestEvents:
    def test_healthy_feed_pushes_and_is_not_degraded(self) -> None:
        policy = Events(SETTINGS, Feed(healthy=True))
        assert policy.pushed is True
        assert policy.degraded is None

    def test_part_confirmed_since_the_subscription_is_a_hit_at_any_age(self) -> None:
        policy = Events(SETTINGS, Feed(healthy=True, epoch=T0))
        assert policy.lookup(make_part(observed=T0), PLAIN, T0 + 3600) is Lookup.HIT

    def test_part_confirmed_before_the_subscription_is_revalidated(self) -> None:
        policy = Events(SETTINGS, Feed(healthy=True, epoch=T0 + 1))
        part = make_part(observed=T0)
        assert policy.lookup(part, PLAIN, T0 + 1.1) is Lookup.REVALIDATE
        assert policy.lookup(part, NO_CACHE, T0 + 1.1) is Lookup.MISS

    def test_request_cache_control_still_applies(self) -> None:
        policy = Events(SETTINGS, Feed(healthy=True, epoch=T0))
        part = make_part(observed=T0)
        assert policy.lookup(part, NO_CACHE, T0) is Lookup.MISS
        assert policy.lookup(part, ReadOptions(max_age_s=1), T0 + 2) is Lookup.MISS
        assert policy.lookup(part, ReadOptions(max_age_s=1), T0 + 0.5) is Lookup.HIT

    def test_nothing_kept_misses(self) -> None:
        assert Events(SETTINGS, Feed()).lookup(None, PLAIN, T0) is Lookup.MISS

    def test_feed_down_falls_back_to_ttl_and_says_so(self) -> None:
        feed = Feed(healthy=False, epoch=T0)
        policy = Events(SETTINGS, feed)
        part = make_part(observed=T0)
        assert policy.pushed is False
        assert policy.degraded is not None
        assert "event feed down" in policy.degraded
        assert policy.lookup(part, PLAIN, T0 + 0.5) is Lookup.HIT
        assert policy.lookup(part, PLAIN, T0 + 1.2) is Lookup.STALE_WHILE_REVALIDATE
        assert policy.lookup(part, PLAIN, T0 + 2) is Lookup.MISS
        feed.healthy = True  # the policy reads the feed live
        assert policy.pushed is True
        assert policy.degraded is None
        assert policy.lookup(part, PLAIN, T0 + 2) is Lookup.HIT

    def test_stale_if_error_as_ttl(self) -> None:
        policy = Events(SETTINGS, Feed())
        part = make_part(observed=T0)
        assert policy.stale_if_error(part, T0 + 3.0) is True
        assert policy.stale_if_error(part, T0 + 3.5) is False


class TestPolicyFor:
    def test_default_is_on_demand(self) -> None:
        assert isinstance(policy_for(Settings(), None), OnDemand)
        assert isinstance(policy_for(Settings(freshness="on-demand"), Feed()), OnDemand)

    def test_ttl(self) -> None:
        assert isinstance(policy_for(Settings(freshness="ttl"), None), Ttl)

    def test_events_needs_a_feed(self) -> None:
        feed = Feed(healthy=True)
        policy = policy_for(Settings(freshness="events"), feed)
        assert isinstance(policy, Events)
        assert policy.pushed is True
        with pytest.raises(ValueError, match="needs an event feed"):
            policy_for(Settings(freshness="events"), None)


@pytest.mark.parametrize(
    "options", [PLAIN, NO_CACHE, ReadOptions(max_age_s=5), ReadOptions(max_age_s=5, no_cache=True)]
)
@pytest.mark.parametrize("healthy", [True, False])
def test_may_serve_is_false_only_where_every_lookup_misses(options: ReadOptions, healthy: bool) -> None:
    """A read skips the store only when the policy would say MISS of any part, at any age."""
    feed = Feed(healthy=healthy, epoch=T0)
    for policy in (OnDemand(), Ttl(SETTINGS), Events(SETTINGS, feed)):
        if policy.may_serve(options):
            continue
        for part in (None, make_part(observed=T0 - 1), make_part(observed=T0), make_part(observed=T0 + 1)):
            for now in (T0, T0 + 0.5, T0 + 3, T0 + 100):
                assert policy.lookup(part, options, now) is Lookup.MISS
    assert OnDemand().may_serve(options) is (options.max_age_s is not None and not options.no_cache)
    assert Ttl(SETTINGS).may_serve(options) is not options.no_cache
