"""Per-provider rate and concurrency limits, shared by every worker through Redis.

Both are sorted sets updated by Lua scripts, so a check-and-take is atomic
across processes, and both use Redis' own clock, so workers whose clocks
disagree still agree on the window. A caller that is refused gets the
seconds to wait and reschedules itself: nobody sleeps in a worker slot.
If Redis cannot be reached the limits let calls through (and say so in the
log): a provider's 429 is then the backstop, and no job stalls.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from shared import redis_keys
from shared.config import Settings

log = logging.getLogger(__name__)

# KEYS[1] window zset, KEYS[2] pause flag; ARGV: window seconds, limit, member.
# Returns {taken, wait seconds}.
_RATE = """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return {0, tostring(paused / 1000)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
  return {1, '0'}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + window - now)}
"""

# KEYS[1] in-flight zset (member = job id, score = lease end); ARGV: lease seconds, cap,
# job id, force. Returns {taken, wait seconds}.
_CONCURRENCY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[1])
local held = redis.call('ZSCORE', KEYS[1], ARGV[3])
if held or ARGV[4] == '1' or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  return {1, '0'}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(math.max(0.05, tonumber(first[2]) - now))}
"""

# KEYS[1] in-flight zset; ARGV: lease seconds, then the job ids whose slots to renew
# (only slots still held: XX never takes a new one).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
return renewed
"""


@dataclass(frozen=True)
class Limits:
    """A provider's limits; 0 switches one off. Each provider's entry in
    shared.providers.registry says what they are, from the settings."""

    rate: int
    window_seconds: float
    concurrency: int
    count_looks: bool  # whether a look at a request takes from the rate, not only a submit
    # The provider's own floor between two looks at one request (Stability's 10 s): an
    # in-flight slot must outlive the gap, or a job still out would lose its slot.
    look_gap_seconds: float = 0.0


class ProviderLimiter:
    def __init__(self, client: redis.Redis, provider: str, limits: Limits,
                 lease_seconds: float) -> None:
        self.provider = provider
        self.limits = limits
        self.lease_seconds = lease_seconds
        self._rate = client.register_script(_RATE)
        self._concurrency = client.register_script(_CONCURRENCY)
        self._renew = client.register_script(_RENEW)
        self._client = client
        self.rate_key = redis_keys.ratelimit_rate(provider)
        self.concurrency_key = redis_keys.ratelimit_inflight(provider)
        self.pause_key = redis_keys.ratelimit_pause(provider)

    def _run(self, script: Any, key: str, *args: Any) -> float:
        keys = [key, self.pause_key] if key == self.rate_key else [key]
        try:
            taken, wait = script(keys=keys, args=list(args))
        except redis.RedisError as exc:
            log.warning("rate limiter for %s unavailable (%s): letting the call through",
                        self.provider, type(exc).__name__)
            return 0.0
        return 0.0 if int(taken) else max(0.01, float(wait))

    def _take_rate(self) -> float:
        if not self.limits.rate:
            return 0.0
        return self._run(self._rate, self.rate_key, self.limits.window_seconds,
                         self.limits.rate, uuid.uuid4().hex)

    def before_submit(self, job_id: str) -> float:
        """Seconds to wait before this job may submit; 0 means go (and the slot is taken)."""
        if self.limits.concurrency:
            wait = self._run(self._concurrency, self.concurrency_key, self.lease_seconds,
                             self.limits.concurrency, job_id, "0")
            if wait:
                return wait
        wait = self._take_rate()
        if wait and self.limits.concurrency:
            self.release(job_id)  # do not hold a concurrency slot while waiting for the rate
        return wait

    def before_look(self, job_id: str) -> float:
        """Renew the job's in-flight slot; for providers that count polls, take the rate."""
        if self.limits.concurrency:
            self._run(self._concurrency, self.concurrency_key, self.lease_seconds,
                      self.limits.concurrency, job_id, "1")
        return self._take_rate() if self.limits.count_looks else 0.0

    def renew(self, job_ids: list[str]) -> None:
        """Renew the in-flight slots of many followed jobs in one round trip per 1,000
        (the engine's lease tick), instead of one call per look."""
        if not self.limits.concurrency:
            return
        for start in range(0, len(job_ids), 1000):
            try:
                self._renew(keys=[self.concurrency_key],
                            args=[self.lease_seconds, *job_ids[start:start + 1000]])
            except redis.RedisError as exc:
                log.warning("could not renew %s slots: %s", self.provider, exc)
                return

    def pause(self, seconds: float) -> None:
        """The provider said 429 with Retry-After: every worker holds off that long, so
        jobs wait out the lockout instead of spending their attempts on it."""
        if seconds <= 0:
            return
        try:
            self._client.set(self.pause_key, "1", px=int(seconds * 1000))
        except redis.RedisError as exc:
            log.warning("could not pause %s: %s", self.provider, exc)

    def release(self, job_id: str) -> None:
        if not self.limits.concurrency:
            return
        try:
            self._client.zrem(self.concurrency_key, job_id)
        except redis.RedisError as exc:
            log.warning("could not release %s slot of %s: %s", self.provider, job_id, exc)


def build_limiter(provider: str, limits: Limits | None,
                  settings: Settings) -> ProviderLimiter | None:
    """The provider's limiter, or None when it has no limits. Built once per process
    (shared.services, with the limits the provider's registry entry reads from the
    settings: guards know no provider by name)."""
    if limits is None or not (limits.rate or limits.concurrency):
        return None
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                  socket_connect_timeout=2)
    # An in-flight slot outlives the longest gap between two looks, then lapses.
    lease = (max(settings.follow_max_seconds, limits.look_gap_seconds)
             + settings.follow_lease_margin_seconds)
    return ProviderLimiter(client, provider, limits, lease)
