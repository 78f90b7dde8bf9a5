"""When to look at a request out at a provider, and for how long to keep looking.

One place for the follow schedule: the first look after a submit, the spacing of the
next ones (a fraction of the time already waited: quick for quick edits, sparse for
slow ones), how long a provider may take, and how long a followed job's lease lasts.
"""

from __future__ import annotations

from shared.config import Settings
from shared.db import utcnow
from shared.errors import ProviderError
from shared.models import Job
from shared.providers.base import ImageEditProvider


def webhook_url(settings: Settings, provider: str) -> str | None:
    if not settings.public_base_url:
        return None
    return f"{settings.public_base_url}/v1/providers/{provider}/webhook"


def calls_back(settings: Settings, provider: ImageEditProvider) -> bool:
    """The provider will call our webhook when the request ends: looks are a fallback
    then, every `follow_max_seconds`, for a callback that never came."""
    return provider.webhooks and webhook_url(settings, provider.name) is not None


def first_look_seconds(settings: Settings, provider: ImageEditProvider) -> float:
    if calls_back(settings, provider):
        return settings.follow_max_seconds
    return max(settings.follow_initial_seconds, provider.min_look_seconds)


def next_look_delay(settings: Settings, waited: float) -> float:
    return min(settings.follow_max_seconds,
               max(settings.follow_initial_seconds, settings.follow_growth * waited))


def waited_seconds(job: Job) -> float:
    return (utcnow() - (job.provider_submitted_at or utcnow())).total_seconds()


def next_look_seconds(settings: Settings, provider: ImageEditProvider, job: Job,
                      retry_after: float | None = None) -> float:
    schedule = (settings.follow_max_seconds if calls_back(settings, provider)
                else next_look_delay(settings, waited_seconds(job)))
    return max(schedule, retry_after or 0.0, provider.min_look_seconds)


def timed_out(job: Job, settings: Settings) -> ProviderError | None:
    """The error to give up on a request with that has run past the provider timeout."""
    if waited_seconds(job) <= settings.provider_timeout_seconds:
        return None
    return ProviderError(f"the provider did not finish request {job.provider_request_id} "
                         f"within {settings.provider_timeout_seconds} s",
                         code="provider_timeout")


def followed_lease_seconds(settings: Settings) -> float:
    """How long a followed job's lease lasts: its engine renews it well before (once
    per interval for all its jobs); past it, the reaper presumes the worker dead."""
    return settings.follow_max_seconds + settings.follow_lease_margin_seconds
