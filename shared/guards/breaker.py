"""A circuit breaker per provider, shared by every worker through Redis.

closed: calls go. After `failures` provider-side failures in a row (within
`window_seconds`), it opens: for `cooldown_seconds` no job submits to that
provider; jobs are put back to wait (no attempt spent) instead of hammering
a provider that is down. Then it is half-open: one probe call at a time may
go; a success closes it, a failure opens it again for another cooldown.

What counts as a provider-side failure is data (`shared.providers.classify`,
`Rule.trips_breaker`): 5xx, timeouts, unreachable hosts, 5xxx task codes, not
a 429 (the rate limiter's business) nor a bad request (the caller's).
Transitions are Lua scripts on Redis' own clock, so they are atomic across
processes. If Redis cannot be reached the breaker lets calls through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from shared import redis_keys
from shared.config import Settings

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# KEYS[1] hash; ARGV: probe timeout. Returns {allowed, wait seconds, state}.
_ALLOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 then return {1, '0', 'closed'} end
if now < open_until then return {0, tostring(open_until - now), 'open'} end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < probe_until then return {0, tostring(probe_until - now), 'half_open'} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
return {1, '0', 'half_open'}
"""

# KEYS[1] hash; ARGV: threshold, window, cooldown. Returns the state after it.
_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cooldown = tonumber(ARGV[3])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until ~= 0 then
  if now >= open_until then
    redis.call('HSET', KEYS[1], 'open_until', now + cooldown)
    redis.call('HDEL', KEYS[1], 'probe_until')
    redis.call('HINCRBY', KEYS[1], 'opened', 1)
  end
  return 'open'
end
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure') or '0')
local failures = 1
if first == 0 or now - first > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'first_failure', now, 'failures', 1)
else
  failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
end
if failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', now + cooldown)
  redis.call('HDEL', KEYS[1], 'failures', 'first_failure', 'probe_until')
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
  return 'open'
end
return 'closed'
"""

# KEYS[1] hash. A success closes the breaker and forgets the failures before it.
_SUCCESS = """
if redis.call('HEXISTS', KEYS[1], 'open_until') == 1
   or redis.call('HEXISTS', KEYS[1], 'failures') == 1 then
  redis.call('HDEL', KEYS[1], 'open_until', 'probe_until', 'failures', 'first_failure')
  return 1
end
return 0
"""


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int
    window_seconds: float
    cooldown_seconds: float


class CircuitBreaker:
    def __init__(self, client: redis.Redis, provider: str, policy: BreakerPolicy) -> None:
        self.provider = provider
        self.policy = policy
        self.key = redis_keys.breaker(provider)
        self._client = client
        self._allow = client.register_script(_ALLOW)
        self._failure = client.register_script(_FAILURE)
        self._success = client.register_script(_SUCCESS)

    def _call(self, script: Any, *args: Any) -> Any:
        try:
            return script(keys=[self.key], args=list(args))
        except redis.RedisError as exc:
            log.warning("circuit breaker for %s unavailable (%s): letting calls through",
                        self.provider, type(exc).__name__)
            return None

    def allow(self) -> float:
        """Seconds to wait before a call may go to this provider; 0 means go."""
        answer = self._call(self._allow, self.policy.cooldown_seconds)
        if answer is None or int(answer[0]):
            return 0.0
        return max(0.05, float(answer[1]))

    def record_failure(self) -> str:
        answer = self._call(self._failure, self.policy.failures, self.policy.window_seconds,
                            self.policy.cooldown_seconds)
        state = answer.decode() if isinstance(answer, bytes) else str(answer or CLOSED)
        if state == OPEN:
            log.warning("circuit breaker for %s is open", self.provider)
        return state

    def record_success(self) -> None:
        self._call(self._success)

    def state(self) -> dict[str, Any]:
        """What /readyz shows: the state, the failures counted, how long it stays open."""
        try:
            raw = self._client.hgetall(self.key)
            now_s, now_us = self._client.time()
        except redis.RedisError as exc:
            return {"state": "unknown", "error": type(exc).__name__}
        fields = {(k.decode() if isinstance(k, bytes) else str(k)): float(v)
                  for k, v in raw.items()}
        now = now_s + now_us / 1_000_000
        open_until = fields.get("open_until", 0.0)
        state = CLOSED if not open_until else OPEN if now < open_until else HALF_OPEN
        return {"state": state, "failures": int(fields.get("failures", 0)),
                "open_for_seconds": round(max(0.0, open_until - now), 3),
                "times_opened": int(fields.get("opened", 0))}


def build_breaker(provider: str, settings: Settings) -> CircuitBreaker | None:
    """The provider's breaker, or None when breakers are off (EDITQ_BREAKER_FAILURES=0).
    Built once per process by shared.services, and only for providers whose registry
    entry wants one (not one that runs in-process): guards know no provider by name."""
    if not settings.breaker_failures:
        return None
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2,
                                  socket_connect_timeout=2)
    return CircuitBreaker(client, provider, BreakerPolicy(
        settings.breaker_failures, settings.breaker_window_seconds,
        settings.breaker_cooldown_seconds))
