"""Bulk's share of a provider's limits and tenants' fair parts of it, against a real
Redis (shared.guards.fairshare)."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from shared.guards.ratelimit import Bulk, Limits, ProviderLimiter, bulk_cap, seen_by

pytestmark = pytest.mark.timeout(30)


def limiter(client: redis.Redis, share: float = 0.7, **limits: float) -> ProviderLimiter:
    values = {"rate": 0, "window_seconds": 60.0, "concurrency": 0, "count_looks": False,
              **limits}
    return ProviderLimiter(client, f"test-{uuid.uuid4().hex[:8]}",
                           Limits(**values), lease_seconds=30,  # type: ignore[arg-type]
                           bulk_share=share)


def fill(lim: ProviderLimiter, bulk: Bulk | None, tries: int, prefix: str = "") -> int:
    """How many of `tries` submits the limiter lets through."""
    return sum(lim.before_submit(f"{prefix}{uuid.uuid4().hex}", bulk) == 0
               for _ in range(tries))


def test_bulk_keeps_to_its_share_of_slots_and_interactive_has_the_rest(
        client: redis.Redis) -> None:
    # given 10 in-flight slots and bulk's share of 70%
    lim = limiter(client, concurrency=10)
    # when one tenant's bulk work tries to take 20
    taken = fill(lim, Bulk("t1"), 20)
    # then it holds 7, and interactive work still gets the other 3, and no more
    assert taken == 7
    assert fill(lim, None, 5) == 3
    usage = lim.usage()["in_flight"]
    assert (usage["bulk"], usage["interactive"], usage["used"]) == (7, 3, 10)
    assert usage["bulk_by_tenant"] == {"t1": 7}


def test_interactive_may_borrow_what_bulk_leaves_idle(client: redis.Redis) -> None:
    # given 10 slots and no bulk work at all
    lim = limiter(client, concurrency=10)
    # when interactive work asks for all of them, it gets them all
    assert fill(lim, None, 12) == 10
    # and bulk, coming later, waits (interactive is not pre-empted), with a wait of a
    # second at least: bulk yields, it does not spin
    wait = lim.before_submit("late-bulk", Bulk("t1"))
    assert wait >= 1.0


def test_bulk_keeps_to_its_share_of_the_rate(client: redis.Redis) -> None:
    # given 20 calls a minute, 70% for bulk: 14
    lim = limiter(client, rate=20)
    assert lim.bulk_rate == 14 == bulk_cap(20, 0.7)
    # when bulk makes 30 calls, then interactive 10
    assert fill(lim, Bulk("t1"), 30) == 14
    assert fill(lim, None, 10) == 6
    # then the window holds 20: 14 bulk and 6 interactive
    rate = lim.usage()["rate"]
    assert (rate["bulk"], rate["interactive"], rate["used"]) == (14, 6, 20)


def test_two_tenants_split_bulks_part_equally_once_both_ask(client: redis.Redis) -> None:
    # given bulk's part of 14 slots (20 at 70%), all taken by tenant A's big batch
    lim = limiter(client, concurrency=20)
    a_jobs = [f"a{n}" for n in range(14)]
    assert all(lim.before_submit(job, Bulk("A")) == 0 for job in a_jobs)
    # when tenant B asks, it is refused (bulk is at its cap) and is now waiting
    assert lim.before_submit("b-first", Bulk("B")) > 0
    assert "B" in lim.usage()["in_flight"]["waiting_tenants"]
    # and as A's jobs finish, A may not take their slots back while B is below its part:
    # B takes them, until each holds 7
    for job in a_jobs[:7]:
        lim.release(job)
        assert lim.before_submit(f"again-{job}", Bulk("A")) > 0
        assert lim.before_submit(f"b-{job}", Bulk("B")) == 0
    held = lim.usage()["in_flight"]["bulk_by_tenant"]
    assert held == {"A": 7, "B": 7}


def test_a_tenant_alone_may_use_all_of_bulks_part(client: redis.Redis) -> None:
    # given 20 slots (bulk's cap 14) and no other tenant asking: parts are held only
    # while someone waits below theirs
    lim = limiter(client, concurrency=20)
    # when one tenant asks for 20, then it gets all of bulk's 14
    assert fill(lim, Bulk("A"), 20) == 14


def test_weights_split_bulks_part_unequally(client: redis.Redis) -> None:
    # given 12 bulk slots (share 1.0), all held by tenant B (weight 1), and tenant A
    # (weight 2) refused once
    lim = limiter(client, share=1.0, concurrency=12)
    b_jobs = [f"b{n}" for n in range(12)]
    assert all(lim.before_submit(job, Bulk("B", 1)) == 0 for job in b_jobs)
    assert lim.before_submit("a-first", Bulk("A", 2)) > 0
    # when B's jobs finish one by one, and after each both tenants ask for another slot
    for n, job in enumerate(b_jobs[:9]):
        lim.release(job)
        lim.before_submit(f"a{n}", Bulk("A", 2))
        lim.before_submit(f"b-again{n}", Bulk("B", 1))
    # then A holds two parts of three and B one, and neither takes the other's
    held = lim.usage()["in_flight"]["bulk_by_tenant"]
    assert held == {"A": 8, "B": 4}, held


def test_concurrent_takers_never_exceed_either_cap(client: redis.Redis) -> None:
    # given 30 slots (bulk's cap 21), three tenants' bulk and interactive work, 8 threads
    lim = limiter(client, concurrency=30)
    barrier = threading.Barrier(8)

    def take(n: int) -> None:
        barrier.wait()
        bulk = None if n % 4 == 0 else Bulk(f"t{n % 3}")
        for _ in range(20):
            lim.before_submit(uuid.uuid4().hex, bulk)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    usage = lim.usage()["in_flight"]
    assert usage["used"] == 30 and usage["bulk"] <= 21
    assert sum(usage["bulk_by_tenant"].values()) == usage["bulk"]


def test_a_released_or_lapsed_bulk_slot_leaves_bulks_count(client: redis.Redis) -> None:
    lim = limiter(client, concurrency=10)
    assert lim.before_submit("x", Bulk("t1")) == 0
    lim.release("x")
    assert lim.usage()["in_flight"]["bulk"] == 0


def test_pace_spreads_bulks_share_of_the_rate(client: redis.Redis) -> None:
    # given 600 calls a minute, bulk's 70% (420/min = 7 a second), 2 seconds' burst
    lim = limiter(client, rate=600)
    # when the feeder wants 200 at once, it may send 14 (two seconds' worth), then none
    assert lim.pace(200) == 14
    assert lim.pace(200) == 0
    # and a provider without a rate is not paced
    assert limiter(client, concurrency=5).pace(200) == 200


def test_a_tenant_sees_its_own_part_and_an_admin_every_tenants(client: redis.Redis) -> None:
    lim = limiter(client, concurrency=10)
    fill(lim, Bulk("mine"), 2)
    fill(lim, Bulk("theirs"), 3)
    usage = lim.usage()
    mine = seen_by(usage, "mine", admin=False)["in_flight"]
    assert mine["bulk_yours"] == 2 and mine["bulk_tenants"] == 2
    assert "bulk_by_tenant" not in mine and "theirs" not in str(mine)
    assert seen_by(usage, "mine", admin=True)["in_flight"]["bulk_by_tenant"] == {
        "mine": 2, "theirs": 3}
