"""Per-provider rate and concurrency limits, shared by every worker through Redis.

Both are sorted sets updated by Lua scripts, so a check-and-take is atomic
across processes, and both use Redis' own clock, so workers whose clocks
disagree still agree on the window. A caller that is refused gets the
seconds to wait and reschedules itself: nobody sleeps in a worker slot.
If Redis cannot be reached the limits let calls through (and say so in the
log): a provider's 429 is then the backstop, and no job stalls.

Bulk work takes at most its share of each limit, and tenants share bulk's part fairly
(shared.guards.fairshare has the scripts and the policy in words).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from shared import redis_keys
from shared.config import Settings
from shared.guards import fairshare

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Bulk:
    """Who a bulk call is for: its tenant, and the tenant's weight in bulk's share."""

    tenant: str
    weight: int = 1


def bulk_cap(limit: int, share: float) -> int:
    """Bulk's part of a limit: its share, rounded down, but at least one call."""
    return max(1, int(limit * share)) if limit else 0


class ProviderLimiter:
    def __init__(self, client: redis.Redis, provider: str, limits: Limits,
                 lease_seconds: float, bulk_share: float = 1.0,
                 bulk_wait_floor: float = 1.0, pace_burst_seconds: float = 2.0) -> None:
        self.provider = provider
        self.limits = limits
        self.lease_seconds = lease_seconds
        self.bulk_share = bulk_share
        # A refused bulk call comes back no sooner than this: bulk yields, it does not spin.
        self.bulk_wait_floor = bulk_wait_floor
        self._rate = client.register_script(fairshare.RATE)
        self._concurrency = client.register_script(fairshare.CONCURRENCY)
        self._renew = client.register_script(fairshare.RENEW)
        self._pace = client.register_script(fairshare.PACE)
        self.pace_burst_seconds = pace_burst_seconds
        self._client = client
        self.rate_key = redis_keys.ratelimit_rate(provider)
        self.concurrency_key = redis_keys.ratelimit_inflight(provider)
        self.pause_key = redis_keys.ratelimit_pause(provider)
        self.bulk_rate_key = redis_keys.ratelimit_bulk(provider, "rate")
        self.bulk_concurrency_key = redis_keys.ratelimit_bulk(provider, "inflight")
        self.waiting_rate_key = redis_keys.ratelimit_waiting(provider, "rate")
        self.waiting_concurrency_key = redis_keys.ratelimit_waiting(provider, "inflight")
        self.weights_key = redis_keys.ratelimit_weights(provider)
        self.pace_key = redis_keys.ratelimit_bulk(provider, "pace")

    @property
    def bulk_rate(self) -> int:
        return bulk_cap(self.limits.rate, self.bulk_share)

    @property
    def bulk_concurrency(self) -> int:
        return bulk_cap(self.limits.concurrency, self.bulk_share)

    def _run(self, script: Any, keys: list[str], *args: Any) -> float:
        try:
            taken, wait = script(keys=keys, args=list(args))
        except redis.RedisError as exc:
            log.warning("rate limiter for %s unavailable (%s): letting the call through",
                        self.provider, type(exc).__name__)
            return 0.0
        return 0.0 if int(taken) else max(0.01, float(wait))

    def _take_rate(self, bulk: Bulk | None) -> float:
        if not self.limits.rate:
            return 0.0
        return self._run(self._rate, [self.rate_key, self.pause_key, self.bulk_rate_key,
                                      self.waiting_rate_key, self.weights_key],
                         self.limits.window_seconds, self.limits.rate, uuid.uuid4().hex,
                         bulk.tenant if bulk else "", self.bulk_rate,
                         bulk.weight if bulk else 1, self.bulk_wait_floor)

    def _take_slot(self, job_id: str, bulk: Bulk | None, force: bool) -> float:
        return self._run(self._concurrency, [self.concurrency_key, self.bulk_concurrency_key,
                                             self.waiting_concurrency_key, self.weights_key],
                         self.lease_seconds, self.limits.concurrency, job_id,
                         "1" if force else "0", bulk.tenant if bulk else "",
                         self.bulk_concurrency, bulk.weight if bulk else 1,
                         self.bulk_wait_floor)

    def before_submit(self, job_id: str, bulk: Bulk | None = None) -> float:
        """Seconds to wait before this job may submit; 0 means go (and the slot is taken).
        `bulk` says the job is low priority, and whose: it then keeps to bulk's share."""
        if self.limits.concurrency and (wait := self._take_slot(job_id, bulk, False)):
            return wait
        wait = self._take_rate(bulk)
        if wait and self.limits.concurrency:
            self.release(job_id)  # do not hold a concurrency slot while waiting for the rate
        return wait

    def pace(self, wanted: int) -> int:
        """How many of `wanted` bulk jobs the feeder may send now: bulk's share of the
        rate, spread evenly (at most `pace_burst_seconds` of it at once), so that their
        answers, and their finishing, come as evenly as they were sent. A provider
        without a rate limit is not paced (bulk_max_in_flight holds it)."""
        if not self.limits.rate or wanted <= 0:
            return wanted
        per_second = self.bulk_rate / self.limits.window_seconds
        try:
            return int(self._pace(keys=[self.pace_key], args=[
                per_second, max(1.0, per_second * self.pace_burst_seconds), wanted]))
        except redis.RedisError as exc:
            log.warning("could not pace %s: %s; sending unpaced", self.provider, exc)
            return wanted

    def before_look(self, job_id: str, bulk: Bulk | None = None) -> float:
        """Renew the job's in-flight slot; for providers that count polls, take the rate."""
        if self.limits.concurrency:
            self._take_slot(job_id, bulk, True)
        return self._take_rate(bulk) if self.limits.count_looks else 0.0

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

    def usage(self) -> dict[str, Any]:
        """What each limit holds now, interactive and bulk, and bulk's use per tenant
        (GET /v1/usage, the metrics). Read without a script: a moment's view, not a lock."""
        try:
            with self._client.pipeline(transaction=False) as pipe:
                now = float(self._client.time()[0])
                window = self.limits.window_seconds
                pipe.zcount(self.rate_key, now - window, "+inf")
                pipe.zrangebyscore(self.bulk_rate_key, now - window, "+inf")
                pipe.zcount(self.concurrency_key, now, "+inf")
                pipe.hvals(self.bulk_concurrency_key)
                pipe.zrangebyscore(self.waiting_rate_key, now, "+inf")
                pipe.zrangebyscore(self.waiting_concurrency_key, now, "+inf")
                calls, bulk_calls, slots, bulk_slots, waiting_rate, waiting_slots = (
                    pipe.execute())
        except redis.RedisError as exc:
            log.warning("could not read %s's limits: %s", self.provider, exc)
            return {"available": False}

        def tenants(owners: list[bytes]) -> dict[str, int]:
            counts: dict[str, int] = {}
            for owner in owners:
                counts[owner.decode()] = counts.get(owner.decode(), 0) + 1
            return counts

        by_tenant = tenants([c.split(b"\t", 1)[0] for c in bulk_calls])
        held = tenants(bulk_slots)
        return {
            "available": True,
            "rate": {"limit": self.limits.rate, "window_seconds": window,
                     "bulk_limit": self.bulk_rate, "used": int(calls),
                     "bulk": len(bulk_calls), "interactive": int(calls) - len(bulk_calls),
                     "bulk_by_tenant": by_tenant,
                     "waiting_tenants": [w.decode() for w in waiting_rate]}
            if self.limits.rate else None,
            "in_flight": {"limit": self.limits.concurrency,
                          "bulk_limit": self.bulk_concurrency, "used": int(slots),
                          "bulk": len(bulk_slots),
                          "interactive": int(slots) - len(bulk_slots),
                          "bulk_by_tenant": held,
                          "waiting_tenants": [w.decode() for w in waiting_slots]}
            if self.limits.concurrency else None,
        }

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
            with self._client.pipeline(transaction=True) as pipe:
                pipe.zrem(self.concurrency_key, job_id)
                pipe.hdel(self.bulk_concurrency_key, job_id)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not release %s slot of %s: %s", self.provider, job_id, exc)


def seen_by(usage: dict[str, Any], tenant_id: str, admin: bool) -> dict[str, Any]:
    """A limiter's usage as a caller may see it: an admin sees every tenant's part of
    bulk; a tenant sees its own, and how many tenants share bulk's part, not who."""
    if admin or not usage.get("available"):
        return usage
    view = dict(usage)
    for name in ("rate", "in_flight"):
        if (part := usage.get(name)) is None:
            continue
        by_tenant = part["bulk_by_tenant"]
        view[name] = {**{k: v for k, v in part.items()
                         if k not in ("bulk_by_tenant", "waiting_tenants")},
                      "bulk_yours": by_tenant.get(tenant_id, 0),
                      "bulk_tenants": len(by_tenant),
                      "you_are_waiting": tenant_id in part["waiting_tenants"]}
    return view


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
    return ProviderLimiter(client, provider, limits, lease, settings.bulk_share,
                           pace_burst_seconds=settings.bulk_pace_burst_seconds)
