"""Every Redis key and channel editq uses, named in one place.

A name here is a contract between processes: the API publishes on the channel the
workers listen on, every worker counts in the same limiter and breaker keys. Spelled
in one module, two sides cannot drift apart, whoever runs Redis can see what editq
writes to it (everything starts with `editq:`), and a rename is one edit.

Pub/sub ignores Redis' database numbers, so the channels carry the database of the
Redis URL: two deployments sharing one Redis on different databases neither wake nor
notify each other. Keys live in the URL's database already and need no such suffix.
(Celery's own keys on the broker are Celery's, and not listed here.)
"""

from __future__ import annotations

from urllib.parse import urlparse

PREFIX = "editq"


def _database(redis_url: str) -> str:
    return (urlparse(redis_url).path or "/0").lstrip("/") or "0"


def changes_channel(redis_url: str) -> str:
    """Where a commit says which job, batch or comparison it changed (shared.changes)."""
    return f"{PREFIX}:changes:{_database(redis_url)}"


def wake_channel(redis_url: str) -> str:
    """Where the API asks the worker that follows a job to look at it now
    (shared.inflight.wakeups)."""
    return f"{PREFIX}:wake:{_database(redis_url)}"


def ratelimit_rate(provider: str) -> str:
    """The provider's rate window: a sorted set of the calls within it."""
    return f"{PREFIX}:ratelimit:{provider}:rate"


def ratelimit_inflight(provider: str) -> str:
    """The provider's concurrency slots: a sorted set of job ids, scored by lease end."""
    return f"{PREFIX}:ratelimit:{provider}:inflight"


def ratelimit_pause(provider: str) -> str:
    """Set, with a TTL, while a 429's Retry-After holds every worker off the provider."""
    return f"{PREFIX}:ratelimit:{provider}:pause"


def ratelimit_bulk(provider: str, resource: str) -> str:
    """Bulk's part of one of the provider's limits (`rate` or `inflight`): for the rate,
    a sorted set of bulk calls (member `tenant<TAB>call`); for in-flight slots, a hash of
    the bulk jobs holding one (job id -> tenant)."""
    return f"{PREFIX}:ratelimit:{provider}:{resource}:bulk"


def ratelimit_waiting(provider: str, resource: str) -> str:
    """The tenants whose bulk work was refused one of the provider's limits, scored by when
    they are expected back: while there, others keep to their fair part."""
    return f"{PREFIX}:ratelimit:{provider}:{resource}:waiting"


def ratelimit_weights(provider: str) -> str:
    """Each tenant's bulk weight as its last call said (tenant -> weight)."""
    return f"{PREFIX}:ratelimit:{provider}:weights"


def breaker(provider: str) -> str:
    """The provider's circuit breaker: a hash of its failures and open/probe times."""
    return f"{PREFIX}:breaker:{provider}"
