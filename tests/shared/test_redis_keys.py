"""Redis keys and channels: all named in shared/redis_keys.py, all under `editq:`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from shared import changes, redis_keys
from shared.guards.breaker import BreakerPolicy, CircuitBreaker
from shared.guards.ratelimit import Limits, ProviderLimiter
from shared.inflight.wakeups import WakePublisher

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]


def test_channels_carry_the_database_of_the_redis_url() -> None:
    # given two deployments on one Redis, on databases 3 and 0 (the default)
    # when their channels are named
    # then they differ, so neither wakes nor notifies the other
    assert redis_keys.wake_channel("redis://r:6379/3") == "editq:wake:3"
    assert redis_keys.wake_channel("redis://r:6379") == "editq:wake:0"
    assert redis_keys.changes_channel("redis://r:6379/3") == "editq:changes:3"
    assert redis_keys.changes_channel("redis://r:6379/") == "editq:changes:0"


def test_the_modules_that_use_redis_take_their_names_from_here() -> None:
    # given each user of Redis, built over a Redis that is never reached
    url = "redis://127.0.0.1:1/5"
    client = redis.Redis.from_url(url)
    limiter = ProviderLimiter(client, "acme", Limits(1, 1.0, 1, False), lease_seconds=5)
    breaker = CircuitBreaker(client, "acme", BreakerPolicy(1, 60, 30))
    publisher = WakePublisher(url)
    try:
        # when their keys and channels are read
        # then they are the ones this module names, all under editq:
        assert (limiter.rate_key, limiter.concurrency_key, limiter.pause_key) == (
            redis_keys.ratelimit_rate("acme"), redis_keys.ratelimit_inflight("acme"),
            redis_keys.ratelimit_pause("acme"))
        assert breaker.key == redis_keys.breaker("acme")
        assert publisher.channel == redis_keys.wake_channel(url)
        assert changes.Publisher(url).channel == redis_keys.changes_channel(url)
        names = [limiter.rate_key, limiter.concurrency_key, limiter.pause_key, breaker.key,
                 publisher.channel]
        assert all(name.startswith(f"{redis_keys.PREFIX}:") for name in names)
    finally:
        publisher.close()
        client.close()


def test_no_other_module_spells_a_redis_key() -> None:
    # given the service's code outside shared/redis_keys.py
    home = ROOT / "shared" / "redis_keys.py"
    files = [path for folder in ("shared", "api", "worker")
             for path in sorted((ROOT / folder).rglob("*.py")) if path != home]
    # when it is searched for a string that starts like one of editq's keys
    spelled = re.compile(r"""\bf?['"]editq:""")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if spelled.search(line)]
    # then there is none
    assert not found, "name it in shared/redis_keys.py:\n" + "\n".join(found)
