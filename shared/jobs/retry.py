"""The retry policy in one place (as dramatiq's `Retries` middleware keeps it): which
failures are tried again, how many times, and after how long.

Which failures are retryable is the providers' classification (shared.providers.classify
sets `retryable` on each error); this module decides what that means for a job: another
attempt after a jittered exponential backoff, with the provider's Retry-After as a floor,
until the attempts run out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.config import Settings
from shared.errors import EditqError


def backoff_seconds(attempt: int, retry_after: float | None, *, base: float = 1.0,
                    cap: float = 60.0) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    return max(delay, retry_after or 0.0)


def spread(wait: float) -> float:
    """Jitter a limiter's wait, so jobs refused together do not all come back together."""
    return wait * random.uniform(1.0, 1.5) + random.uniform(0.0, 0.05)


@dataclass(frozen=True)
class Retries:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> Retries:
        return cls(settings.job_max_attempts, settings.retry_backoff_base_seconds,
                   settings.retry_backoff_max_seconds)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_seconds(attempt, retry_after, base=self.base_seconds,
                               cap=self.max_seconds)

    def after(self, exc: EditqError, attempts: int) -> float | None:
        """Seconds until the next attempt of a job whose attempt number `attempts` failed
        with `exc`, or None: the job fails now."""
        if not exc.retryable or attempts >= self.max_attempts:
            return None
        return self.backoff(attempts, exc.retry_after)
