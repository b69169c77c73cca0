"""Single flight, batching, hedging, deadlines and the breaker of one upstream, over a fake transport."""

from __future__ import annotations

import asyncio

import pytest

from aggregator import Aggregator, NoParticipantAnswered, ReadOptions, parse_definition
from aggregator.errors import PartFailure
from aggregator.view import Part

from .factories import PAIR
from .fakes import Call, FakeTransport, Reply, Rig, upstream_rig

#: Records of the participant ``payment`` for workflows w-0 … w-99.
RECORDS = {"payment": {f"w-{i}": ("AUTHORIZED", 1) for i in range(100)}}


def fake(delay: float = 0.0) -> FakeTransport:
    return FakeTransport(records={p: dict(r) for p, r in RECORDS.items()}, delay=delay)


async def read(rig: Rig, workflow_id: str, timeout: float = 2.0) -> Part:
    """One reader's part, by a deadline ``timeout`` seconds away."""
    return await rig.upstream.get(workflow_id, until=asyncio.get_running_loop().time() + timeout)


async def warm_up(rig: Rig, rounds: int = 30, width: int = 1) -> None:
    """Fast calls (the fake answers without a pause) that fill the latency window and earn hedge budget."""
    for r in range(rounds):
        await asyncio.gather(*(read(rig, f"w-{(r * width + i) % 100}") for i in range(width)))


# -- single flight ------------------------------------------------------------------------


async def test_concurrent_reads_of_one_part_share_one_call() -> None:
    """Twenty readers of one part while its call is out: one call, nineteen joined it."""
    async with upstream_rig(fake(delay=0.02)) as rig:
        parts = await asyncio.gather(*(read(rig, "w-1") for _ in range(20)))
        assert {(p.state, p.version) for p in parts} == {("AUTHORIZED", 1)}
        assert [c.ids for c in rig.fake.calls] == [("w-1",)]
        assert rig.count("aggregator_coalesced_total") == 19
        await read(rig, "w-1")  # landed: the next read is a new call
        assert len(rig.fake.calls) == 2


# -- batching -----------------------------------------------------------------------------


async def test_reads_of_many_workflows_in_one_turn_go_in_one_batch_call() -> None:
    """Twelve reads started in one turn: one batch call for all twelve, no single call; a lone
    read afterwards goes out alone, as a single call."""
    async with upstream_rig(fake()) as rig:
        ids = [f"w-{i}" for i in range(10)] + ["unknown-1", "unknown-2"]
        parts = await asyncio.gather(*(read(rig, w) for w in ids))
        assert [p.state for p in parts] == ["AUTHORIZED"] * 10 + [None, None]
        assert [(c.batch, c.ids) for c in rig.fake.calls] == [(True, tuple(ids))]
        assert rig.count("aggregator_batched_parts_total") == 12
        await read(rig, "w-50")
        assert [(c.batch, c.ids) for c in rig.fake.calls[1:]] == [(False, ("w-50",))]


async def test_reads_that_come_while_a_call_is_out_wait_for_company() -> None:
    """A first read goes out alone; twenty reads that follow one loop turn apart while it is out
    wait (at most ``batch_wait_ms``) and share a batch call instead of going one by one."""
    async with upstream_rig(fake(delay=0.02), batch_wait_ms=10) as rig:
        first = asyncio.create_task(read(rig, "w-0"))
        await asyncio.sleep(0.005)
        reads = []
        for i in range(1, 21):
            reads.append(asyncio.create_task(read(rig, f"w-{i}")))
            await asyncio.sleep(0)  # the next read comes one loop turn later
        parts = await asyncio.gather(first, *reads)
    assert all(p.state == "AUTHORIZED" for p in parts)
    calls = rig.fake.calls
    assert calls[0].ids == ("w-0",) and not calls[0].batch
    assert len(calls) <= 3, [c.ids for c in calls]  # twenty-one without the wait
    assert sum(len(c.ids) for c in calls if c.batch) == 20
    assert rig.count("aggregator_batched_parts_total") == 20


async def test_waiting_reads_go_out_as_soon_as_the_call_in_flight_lands() -> None:
    """With a long ``batch_wait_ms``, reads waiting behind a call go out when it lands, not at the end of the wait."""
    async with upstream_rig(fake(delay=0.03), batch_wait_ms=500) as rig:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(read(rig, "w-0"))
        await asyncio.sleep(0.005)
        later = [asyncio.create_task(read(rig, f"w-{i}")) for i in (1, 2)]
        await asyncio.gather(first, *later)
        elapsed = loop.time() - started
    assert [(c.batch, c.ids) for c in rig.fake.calls] == [(False, ("w-0",)), (True, ("w-1", "w-2"))]
    assert rig.fake.calls[1].started - started < 0.1
    assert elapsed < 0.2


def test_waiting_reads_go_out_as_soon_as_the_call_in_flight_lands_on_uvloop() -> None:
    """The same on uvloop, the servers' loop (whose timer handles are not asyncio's)."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(test_waiting_reads_go_out_as_soon_as_the_call_in_flight_lands())


async def test_a_read_with_nothing_in_flight_does_not_wait() -> None:
    """Reads spaced out (no call in flight when each comes) each go out at the end of their turn."""
    async with upstream_rig(fake(), batch_wait_ms=500) as rig:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(3):
            await read(rig, f"w-{i}")
        assert loop.time() - started < 0.1
    assert [c.batch for c in rig.fake.calls] == [False] * 3


# -- hedging ------------------------------------------------------------------------------


async def test_a_slow_call_is_hedged_the_hedge_wins_and_the_first_call_is_cancelled() -> None:
    """After thirty fast calls, one that stalls past the percentile is hedged; the hedge answers
    first, its part lands in the store, and the stalled call is cancelled."""
    async with upstream_rig(fake()) as rig:
        await warm_up(rig)
        assert rig.count("aggregator_hedges_total") == 0
        rig.fake.plan("payment", Reply(delay=1.0))
        loop = asyncio.get_running_loop()
        started = loop.time()
        part = await read(rig, "w-77")
        elapsed = loop.time() - started
        await asyncio.sleep(0)  # the cancellation reaches the stalled call
        stalled, hedge = rig.fake.calls[-2:]
        assert part.state == "AUTHORIZED" and part.source == "live"
        assert elapsed < 0.3
        assert (stalled.ids, stalled.outcome) == (("w-77",), "cancelled")
        assert (hedge.ids, hedge.outcome) == (("w-77",), "answered")
        assert rig.count("aggregator_hedges_total") == 1
        assert rig.count("aggregator_hedge_wins_total") == 1
        assert rig.count("aggregator_participant_calls_total", outcome="cancelled") == 1
        kept = rig.store.get("payment", "w-77")
        assert kept is not None and kept.version == 1


async def test_no_hedge_before_the_window_has_samples() -> None:
    """A slow call with too few latencies known to judge it by is waited for, not hedged."""
    async with upstream_rig(fake()) as rig:
        await warm_up(rig, rounds=5)
        rig.fake.plan("payment", Reply(delay=0.05))
        assert (await read(rig, "w-77")).state == "AUTHORIZED"
        assert rig.count("aggregator_hedges_total") == 0
        assert rig.fake.calls[-1].outcome == "answered"


@pytest.mark.slow
async def test_hedging_keeps_to_its_budget_when_every_first_call_is_slow() -> None:
    """Every first call stalls and every hedge would win: still at most ``hedge_budget`` extra
    calls per call (the budget, not the latencies, is what stops them)."""

    def first_calls_stall(calls: list[Call]) -> Reply:
        asked = calls[-1].ids
        return Reply(delay=0.01 if [c.ids for c in calls].count(asked) == 1 else 0.0)

    async with upstream_rig(fake()) as rig:
        await warm_up(rig)
        rig.fake.choose = first_calls_stall
        for i in range(60):
            await read(rig, f"slow-{i}")
        hedges = rig.count("aggregator_hedges_total")
        wins = rig.count("aggregator_hedge_wins_total")
    made = 30 + 60
    assert 1 <= wins <= hedges <= 0.05 * made  # the budget earned by 90 calls: 4.5
    assert len(rig.fake.calls) == made + hedges


async def test_hedging_off_sends_no_hedge() -> None:
    """``hedge = false``: a stalled call is waited for."""
    async with upstream_rig(fake(), hedge=False) as rig:
        await warm_up(rig)
        rig.fake.plan("payment", Reply(delay=0.05))
        await read(rig, "w-77")
        assert rig.count("aggregator_hedges_total") == 0


async def test_a_slow_batch_call_is_hedged_by_one_batch_call_for_its_parts() -> None:
    """After thirty fast batch calls, one that stalls is hedged by a single second batch call for
    the same parts; its answer lands them while the stalled call goes on."""
    async with upstream_rig(fake()) as rig:
        await warm_up(rig, width=3)
        assert all(c.batch for c in rig.fake.calls)
        rig.fake.plan("payment", Reply(delay=0.5))
        loop = asyncio.get_running_loop()
        started = loop.time()
        parts = await asyncio.gather(*(read(rig, f"w-{90 + i}") for i in range(3)))
        elapsed = loop.time() - started
        stalled, hedge = rig.fake.calls[-2:]
        assert [p.state for p in parts] == ["AUTHORIZED"] * 3
        assert elapsed < 0.3
        assert stalled.batch and hedge.batch
        assert stalled.ids == hedge.ids == ("w-90", "w-91", "w-92")
        assert (stalled.outcome, hedge.outcome) == ("pending", "answered")  # the first call goes on
        assert rig.count("aggregator_hedges_total") == 1
        assert rig.count("aggregator_hedge_wins_total") == 1
        assert all(rig.store.get("payment", f"w-{90 + i}") is not None for i in range(3))


# -- deadlines ----------------------------------------------------------------------------


async def test_a_reader_past_its_deadline_gets_timeout_and_the_answer_still_lands() -> None:
    """A reader whose deadline comes first gets ``timeout`` on time; the call goes on, and its
    answer reaches the store (the next read is served from it)."""
    async with upstream_rig(fake(delay=0.1)) as rig:
        with pytest.raises(PartFailure) as failed:
            await read(rig, "w-5", timeout=0.02)
        assert failed.value.kind == "timeout"
        assert rig.fake.calls[0].outcome == "pending"  # the reader gave up before the call landed
        assert rig.store.get("payment", "w-5") is None
        await asyncio.sleep(0.15)
        assert rig.fake.calls[0].outcome == "answered"
        kept = rig.store.get("payment", "w-5")
        assert kept is not None and kept.state == "AUTHORIZED"
        assert rig.count("aggregator_participant_calls_total", outcome="ok") == 1


async def test_a_call_past_the_participants_timeout_is_a_timeout() -> None:
    """The participant's own ``timeout_ms`` bounds the call, whatever the reader's deadline."""
    async with upstream_rig(fake(delay=0.5), timeout_ms=30) as rig:
        with pytest.raises(PartFailure) as failed:
            await read(rig, "w-5", timeout=2.0)
        assert failed.value.kind == "timeout"
        await asyncio.sleep(0)
        assert rig.fake.calls[0].outcome == "cancelled"
        assert rig.count("aggregator_participant_calls_total", outcome="timeout") == 1


async def test_a_batched_read_keeps_its_own_deadline() -> None:
    """Batched with a patient read, a read with a short deadline gives up on time; the other gets its part."""
    async with upstream_rig(fake(delay=0.08)) as rig:
        loop = asyncio.get_running_loop()
        started = loop.time()
        short, patient = await asyncio.gather(
            read(rig, "w-1", timeout=0.02), read(rig, "w-2", timeout=1.0), return_exceptions=True
        )
        assert isinstance(short, PartFailure) and short.kind == "timeout"
        assert isinstance(patient, Part) and patient.state == "AUTHORIZED"
        assert [c.ids for c in rig.fake.calls] == [("w-1", "w-2")]
        assert 0.07 <= loop.time() - started < 0.3


# -- the breaker --------------------------------------------------------------------------


async def test_failures_open_the_breaker_and_calls_stop() -> None:
    """Five failures open the breaker: the next reads are ``circuit_open`` without a call."""
    async with upstream_rig(fake(), breaker_failures=5) as rig:
        rig.fake.plan("payment", *[Reply(fail="unavailable")] * 5)
        kinds = []
        for _ in range(8):
            with pytest.raises(PartFailure) as failed:
                await read(rig, "w-1")
            kinds.append(failed.value.kind)
        assert kinds == ["unavailable"] * 5 + ["circuit_open"] * 3
        assert len(rig.fake.calls) == 5
        assert rig.upstream.breaker_state == "open"
        assert rig.count("aggregator_breaker_state") == 2
        assert rig.count("aggregator_participant_calls_total", outcome="circuit_open") == 3


async def test_after_the_pause_one_probe_goes_out_and_its_success_closes_the_breaker() -> None:
    """Half-open: one probe call at a time (others are ``circuit_open``); it answers, the breaker closes."""
    async with upstream_rig(fake(), breaker_failures=2, breaker_reset_ms=30) as rig:
        rig.fake.plan("payment", Reply(fail="unavailable"), Reply(fail="bad_response"), Reply(delay=0.1))
        for _ in range(2):
            with pytest.raises(PartFailure):
                await read(rig, "w-1")
        assert rig.upstream.breaker_state == "open"
        await asyncio.sleep(0.04)
        probe = asyncio.create_task(read(rig, "w-1"))
        await asyncio.sleep(0.01)
        assert rig.upstream.breaker_state == "half_open"
        with pytest.raises(PartFailure) as refused:
            await read(rig, "w-2")
        assert refused.value.kind == "circuit_open"
        assert (await probe).state == "AUTHORIZED"
        assert rig.upstream.breaker_state == "closed"
        assert rig.count("aggregator_breaker_state") == 0
        assert (await read(rig, "w-2")).state == "AUTHORIZED"
        assert [c.ids for c in rig.fake.calls] == [("w-1",)] * 3 + [("w-2",)]


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    """A half-open probe that fails opens the breaker at once (no second threshold's worth of failures)."""
    async with upstream_rig(fake(), breaker_failures=2, breaker_reset_ms=30) as rig:
        rig.fake.plan("payment", *[Reply(status=503)] * 3)
        for _ in range(2):
            with pytest.raises(PartFailure):
                await read(rig, "w-1")
        await asyncio.sleep(0.04)
        with pytest.raises(PartFailure) as probe:
            await read(rig, "w-1")
        assert probe.value.kind == "unavailable"
        assert rig.upstream.breaker_state == "open"
        with pytest.raises(PartFailure) as refused:
            await read(rig, "w-1")
        assert refused.value.kind == "circuit_open"
        assert len(rig.fake.calls) == 3


# -- the aggregator over a given transport ------------------------------------------------


async def test_an_aggregator_over_a_given_transport_reads_reports_health_and_leaves_it_open() -> None:
    """Views come through the given transport; ``health()`` names each breaker; exit does not close it."""
    transport = FakeTransport(
        records={"payment": {"w-1": ("AUTHORIZED", 2)}, "shipping": {"w-1": ("SCHEDULED", 1)}}
    )
    definition = parse_definition(PAIR).with_settings(breaker_failures=1)
    agg = Aggregator(definition, transport=transport)
    assert agg.health().ready is False
    async with agg:
        view = await agg.view("w-1")
        assert {n: p.state for n, p in view.parts.items()} == {
            "payment": "AUTHORIZED",
            "shipping": "SCHEDULED",
        }
        health = agg.health()
        assert (health.ready, dict(health.breakers), health.failing) == (
            True,
            {"payment": "closed", "shipping": "closed"},
            [],
        )
        transport.plan("shipping", Reply(fail="unavailable"))
        assert (await agg.view("w-1", ReadOptions(no_cache=True))).parts["shipping"].error == "unavailable"
        assert agg.health().breakers == {"payment": "closed", "shipping": "open"}
        assert agg.health().failing == ["shipping"]
    assert transport.closed is False
    assert agg.health().ready is False


async def test_an_aggregator_read_cut_by_its_deadline_still_stores_the_answer() -> None:
    """A view whose deadline comes first has no part to show; the calls go on and the next view is served from them."""
    transport = FakeTransport(
        records={"payment": {"w-1": ("AUTHORIZED", 2)}, "shipping": {"w-1": ("SCHEDULED", 1)}}, delay=0.06
    )
    async with Aggregator(parse_definition(PAIR).with_settings(freshness="ttl"), transport=transport) as agg:
        with pytest.raises(NoParticipantAnswered):
            await agg.view("w-1", ReadOptions(timeout_ms=10))
        await asyncio.sleep(0.15)
        view = await agg.view("w-1", ReadOptions(timeout_ms=10))
        assert {p.source for p in view.parts.values()} == {"cache"}
        assert len(transport.calls) == 2


async def test_a_view_at_its_deadline_shows_what_landed_and_leaves_the_late_call_running() -> None:
    """One deadline for the view: the fast part is shown, the slow one is a timeout, and its call goes on."""
    transport = FakeTransport(
        records={"payment": {"w-1": ("AUTHORIZED", 2)}, "shipping": {"w-1": ("SCHEDULED", 1)}}
    )
    transport.plan("shipping", Reply(delay=0.1))
    async with Aggregator(parse_definition(PAIR), transport=transport) as agg:
        loop = asyncio.get_running_loop()
        started = loop.time()
        view = await agg.view("w-1", ReadOptions(timeout_ms=30))
        assert 0.025 <= loop.time() - started < 0.09
        assert (view.parts["payment"].source, view.parts["payment"].error) == ("live", None)
        assert (view.parts["shipping"].state, view.parts["shipping"].error) == (None, "timeout")
        assert view.complete is False
        await asyncio.sleep(0.12)
        assert [c.outcome for c in transport.to("shipping")] == ["answered"]
        assert agg.store.get("shipping", "w-1") is not None
