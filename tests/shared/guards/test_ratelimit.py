"""The shared limits, against a real Redis: atomic across threads, waits instead of sleeps."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.guards.ratelimit import Limits, ProviderLimiter

pytestmark = pytest.mark.timeout(30)


def limiter(client: redis.Redis, **limits: float) -> ProviderLimiter:
    values = {"rate": 0, "window_seconds": 1.0, "concurrency": 0, "count_looks": False,
              **limits}
    return ProviderLimiter(client, f"test-{uuid.uuid4().hex[:8]}", Limits(**values),  # type: ignore[arg-type]
                           lease_seconds=5)


def test_rate_is_never_exceeded_by_concurrent_takers(client: redis.Redis) -> None:
    # given a limit of 20 per 2 s and 16 threads trying 10 times each
    lim = limiter(client, rate=20, window_seconds=2.0)
    granted: list[int] = []
    waits: list[float] = []
    barrier = threading.Barrier(16)

    def take() -> None:
        barrier.wait()
        for _ in range(10):
            wait = lim.before_submit(uuid.uuid4().hex)
            (waits if wait else granted).append(wait or 1)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    # then exactly 20 were let through, and the others were told how long to wait
    assert len(granted) == 20
    assert len(waits) == 140 and all(0 < w <= 2.0 for w in waits)


def test_concurrency_slots_are_held_until_released(client: redis.Redis) -> None:
    lim = limiter(client, concurrency=2)
    assert lim.before_submit("a") == 0 and lim.before_submit("b") == 0
    assert lim.before_submit("c") > 0          # full
    assert lim.before_submit("a") == 0         # a job already holding a slot keeps it
    lim.release("a")
    assert lim.before_submit("c") == 0


def test_polls_count_only_for_providers_that_count_them(client: redis.Redis) -> None:
    counting = limiter(client, rate=1, window_seconds=5.0, count_looks=True)
    assert counting.before_look("j") == 0 and counting.before_look("j") > 0
    quiet = limiter(client, rate=1, window_seconds=5.0, count_looks=False)
    assert quiet.before_look("j") == 0 and quiet.before_look("j") == 0


def test_an_unreachable_redis_lets_calls_through() -> None:
    from cli.stack import free_port

    # (no retries: redis-py's default backs off for 3.5 s before it gives up)
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    assert limiter(dead, rate=1, concurrency=1).before_submit("x") == 0


def test_a_pause_holds_every_caller_off_until_it_lapses(client: redis.Redis) -> None:
    # given a provider that answered 429 with Retry-After: 1
    lim = limiter(client, rate=100, window_seconds=10.0)
    lim.pause(1.0)
    # then nobody may call it for about that long, whatever the rate left
    wait = lim.before_submit("a")
    assert 0.5 < wait <= 1.0
    from tests.helpers import wait_for

    wait_for(lambda: lim.before_submit("b") == 0, 3, "the pause to lapse")
