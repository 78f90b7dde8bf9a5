"""One process's services: built once at its start and passed down.

The API builds one in `create_app` (kept on `app.state`), a worker in Celery's
`worker_init` (worker.runtime), a CLI command when it runs. Everything that
holds a connection pool or a per-process view of shared state hangs off it:
the settings it was built from, the catalog with their prices, the storage
client, and per provider its client, breaker and limiter, each as the provider's
entry in the registry (`shared.providers.registry`) says: a test gives its own
registry to add a fake provider.

A provider, breaker or limiter is built the first time a job needs it, not at
start: a deployment without a WaveSpeed key must start and refuse only WaveSpeed
jobs (ProviderNotConfigured), and a process that never calls Stability should
not hold a pool for it. Each is still built once, under a lock, and then shared
by every thread of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from sqlalchemy import select

from shared.changes import Publisher, register
from shared.config import Settings
from shared.db import session_scope
from shared.guards.breaker import CircuitBreaker, build_breaker
from shared.guards.ratelimit import Bulk, ProviderLimiter, build_limiter
from shared.models import Job, Tenant
from shared.providers.base import ImageEditProvider
from shared.providers.catalog import Catalog, load_catalog
from shared.providers.registry import Registry
from shared.providers.router import build_provider
from shared.queue import BULK
from shared.storage import Storage

T = TypeVar("T")
# How long a tenant's bulk weight is taken as read: an operator's change reaches every
# worker within this, and a submit does not read the tenants table.
WEIGHT_TTL_SECONDS = 30.0


class Services:
    def __init__(self, settings: Settings, *, catalog: Catalog | None = None,
                 storage: Storage | None = None,
                 providers: dict[str, ImageEditProvider] | None = None,
                 registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else Registry()
        # Read now: a broken catalog or price override stops start-up, not a request.
        self.catalog = catalog if catalog is not None else load_catalog(
            price_overrides=settings.pricing_overrides())
        self._storage = storage
        self._lock = threading.Lock()
        # Built as jobs need them; prebuilt ones (a test's scripted provider) may be given.
        self.providers: dict[str, ImageEditProvider] = dict(providers or {})
        self._breakers: dict[str, CircuitBreaker | None] = {}
        self._limiters: dict[str, ProviderLimiter | None] = {}
        self._sources: dict[str, Storage] = {}
        self._weights: dict[str, tuple[float, int]] = {}
        self._fetcher: httpx.Client | None = None
        # Commits that change a job, batch or comparison say so on Redis (shared.changes).
        self.changes = Publisher(settings.redis_url)
        register(settings.database_url, self.changes)

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    self._storage = Storage(self.settings)
        return self._storage

    def source(self, bucket: str) -> Storage:
        """A source bucket a batch reads its images from (EDITQ_SOURCE_BUCKETS)."""
        return self._once(self._sources, bucket, lambda name, settings: Storage(settings, name))

    @property
    def fetcher(self) -> httpx.Client:
        """The HTTP client that fetches image URLs (shared.fetching: redirects by hand)."""
        if self._fetcher is None:
            with self._lock:
                if self._fetcher is None:
                    timeout = self.settings.input_fetch_timeout_seconds
                    self._fetcher = httpx.Client(
                        follow_redirects=False, timeout=httpx.Timeout(timeout, connect=5.0),
                        limits=httpx.Limits(max_connections=32))
        return self._fetcher

    def provider(self, name: str) -> ImageEditProvider:
        """The provider called `name` (ProviderNotConfigured when its key is unset)."""
        return self._once(self.providers, name,
                          lambda name, settings: build_provider(name, settings, self.registry))

    def breaker(self, provider: str) -> CircuitBreaker | None:
        """Its circuit breaker; None for one that runs in-process, or breakers off."""
        return self._once(self._breakers, provider, lambda name, settings: build_breaker(
            name, settings) if self.registry.entry(name).breaker else None)

    def limiter(self, provider: str) -> ProviderLimiter | None:
        """Its rate/concurrency limiter, with the limits its entry reads from the settings
        (guards know no provider by name); None without limits."""
        return self._once(self._limiters, provider, lambda name, settings: build_limiter(
            name, self.registry.entry(name).limits(settings), settings))

    def limits_in_use(self) -> dict[str, dict[str, Any]]:
        """Each limited provider's limits and what interactive and bulk work hold of them
        now (GET /v1/usage, the metrics)."""
        return {name: limiter.usage() for name in self.registry.names()
                if (limiter := self.limiter(name)) is not None}

    def bulk(self, job: Job) -> Bulk | None:
        """Whose bulk work a job is, for the limits' fair share; None for interactive work
        (a job on the interactive queue: priority "normal")."""
        if job.queue != BULK:
            return None
        return Bulk(job.tenant_id, self.bulk_weight(job.tenant_id))

    def bulk_weight(self, tenant_id: str) -> int:
        """The tenant's weight in bulk's share, as read at most WEIGHT_TTL_SECONDS ago."""
        now = time.monotonic()
        read = self._weights.get(tenant_id)
        if read is None or read[0] < now:
            with session_scope(self.settings.database_url) as session:
                weight = session.scalar(select(Tenant.bulk_weight)
                                        .where(Tenant.id == tenant_id))
            read = (now + WEIGHT_TTL_SECONDS, weight or 1)
            self._weights[tenant_id] = read
        return read[1]

    def _once(self, built: dict[str, T], name: str,
              build: Callable[[str, Settings], T]) -> T:
        try:
            return built[name]
        except KeyError:
            pass
        with self._lock:
            if name not in built:
                built[name] = build(name, self.settings)
            return built[name]
