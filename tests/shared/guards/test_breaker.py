"""The circuit breaker's transitions, on a real Redis (its scripts run there)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.guards.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    CircuitBreaker,
    build_breaker,
)
from tests.conftest import make_settings, redis_db
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def client(redis_base: str) -> redis.Redis:
    return redis.Redis.from_url(redis_db(redis_base, "api"))


def breaker(client: redis.Redis, failures: int = 3, window: float = 60,
            cooldown: float = 0.5) -> CircuitBreaker:
    # A provider name of its own per test: state lives in Redis.
    return CircuitBreaker(client, f"p-{uuid.uuid4().hex[:8]}",
                          BreakerPolicy(failures, window, cooldown))


def test_it_opens_after_a_run_of_failures_and_refuses_calls_for_the_cooldown(
        client: redis.Redis) -> None:
    b = breaker(client, failures=3, cooldown=30)
    # given two failures, it stays closed and lets calls through
    assert [b.record_failure(), b.record_failure()] == [CLOSED, CLOSED]
    assert b.allow() == 0 and b.state()["failures"] == 2
    # when a third fails in a row, it opens
    assert b.record_failure() == OPEN
    # then calls wait for about the cooldown
    assert 29 < b.allow() <= 30
    state = b.state()
    assert (state["state"], state["times_opened"]) == (OPEN, 1)
    assert 29 < state["open_for_seconds"] <= 30


def test_a_success_resets_the_run(client: redis.Redis) -> None:
    b = breaker(client, failures=3)
    b.record_failure()
    b.record_failure()
    b.record_success()
    assert [b.record_failure(), b.record_failure()] == [CLOSED, CLOSED]
    assert b.state()["state"] == CLOSED


def test_failures_outside_the_window_do_not_add_up(client: redis.Redis) -> None:
    b = breaker(client, failures=2, window=0.3)
    b.record_failure()
    time.sleep(0.4)  # (the window itself is what is under test)
    assert b.record_failure() == CLOSED


def test_after_the_cooldown_one_probe_goes_and_its_outcome_decides(
        client: redis.Redis) -> None:
    b = breaker(client, failures=1, cooldown=0.3)
    assert b.record_failure() == OPEN
    # when the cooldown has passed, it is half-open: one call may go, the next waits
    wait_for(lambda: b.state()["state"] == HALF_OPEN, 5, "the cooldown to pass")
    assert b.allow() == 0
    assert b.allow() > 0
    # and a failed probe opens it again for a whole cooldown
    assert b.record_failure() == OPEN and b.state()["times_opened"] == 2
    assert b.allow() > 0.2
    # while a successful probe closes it
    wait_for(lambda: b.state()["state"] == HALF_OPEN, 5, "the second cooldown to pass")
    assert b.allow() == 0
    b.record_success()
    assert b.state()["state"] == CLOSED and b.allow() == 0


def test_it_is_shared_by_every_process_through_redis(redis_base: str) -> None:
    provider = f"p-{uuid.uuid4().hex[:8]}"
    policy = BreakerPolicy(2, 60, 30)
    one = CircuitBreaker(redis.Redis.from_url(redis_db(redis_base, "api")), provider, policy)
    other = CircuitBreaker(redis.Redis.from_url(redis_db(redis_base, "api")), provider, policy)
    one.record_failure()
    other.record_failure()
    assert one.allow() > 0 and other.state()["state"] == OPEN


def test_without_redis_it_lets_calls_through() -> None:
    # (no retries: redis-py's default backs off for 3.5 s before it gives up)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    b = CircuitBreaker(dead, "p", BreakerPolicy(1, 60, 30))
    assert b.record_failure() == CLOSED and b.allow() == 0
    assert b.state()["state"] == "unknown"


def test_breakers_are_off_when_configured_so() -> None:
    # given breakers switched off, then on
    # when a provider's breaker is built
    # then there is none while off, and one while on (which providers get one at all is
    # their registry entry's say: tests/shared/providers/test_registry.py)
    assert build_breaker("wavespeed", make_settings(breaker_failures=0)) is None
    assert build_breaker("wavespeed", make_settings(breaker_failures=5)) is not None
