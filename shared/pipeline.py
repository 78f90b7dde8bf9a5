"""Running one job: claim, submit, poll, store the outputs, finish.

Each step is a short task and is safe to repeat: the claim is conditional,
the provider's request id is saved the moment it answers, outputs are written
under deterministic keys, and the finishing update only moves a job that is
still running, so a redelivered message cannot produce a second result.
Waiting is never done here: a step that must wait asks the scheduler to run
the next step later.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.errors import EditqError, ProviderError
from shared.images import inspect_image
from shared.jobs import (
    CANCELED,
    RUNNING,
    add_event,
    claim,
    extend_lease,
    fail,
    mark_submitting,
    record_submitted,
    requeue,
    succeed,
    unclaim,
)
from shared.models import Job
from shared.providers.base import ImageEditResult
from shared.providers.catalog import ModelSpec, get_catalog
from shared.providers.router import build_options, get_provider
from shared.ratelimit import get_limiter
from shared.storage import Storage, output_key

log = logging.getLogger(__name__)

class Scheduler(Protocol):
    """How the pipeline asks for its next step: the worker enqueues Celery tasks."""

    def run(self, job_id: str, delay: float) -> None: ...

    def poll(self, job_id: str, delay: float) -> None: ...


@dataclass(frozen=True)
class RunOutcome:
    """What a step did; the task logs it, tests assert on it."""

    job_id: str
    action: str  # skipped, throttled, submitted, waiting, succeeded, failed, retry, discarded
    detail: str = ""


def backoff_seconds(attempt: int, retry_after: float | None, *, base: float = 1.0,
                    cap: float = 60.0) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    return max(delay, retry_after or 0.0)


def next_poll_delay(settings: Settings, waited: float) -> float:
    """Look again after a fraction of the time already waited: quick for quick edits,
    sparse for slow ones, and never further apart than the cap."""
    return min(settings.poll_max_seconds,
               max(settings.poll_initial_seconds, settings.poll_growth * waited))


def webhook_url(settings: Settings, provider: str) -> str | None:
    if not settings.public_base_url:
        return None
    return f"{settings.public_base_url}/v1/providers/{provider}/webhook"


def _load_inputs(storage: Storage, job: Job) -> tuple[list[bytes], bytes | None]:
    images = [storage.get(key) for key in job.input_keys]
    mask = storage.get(job.mask_key) if job.mask_key else None
    return images, mask


def _store_outputs(storage: Storage, settings: Settings, job: Job,
                   result: ImageEditResult) -> list[dict[str, Any]]:
    outputs = []
    for index, image in enumerate(result.images):
        # Never store what is not an image, whatever the provider claimed.
        try:
            info = inspect_image(image.data, field=f"output[{index}]",
                                 max_bytes=settings.max_output_bytes,
                                 max_pixels=max(settings.max_image_pixels, 200_000_000))
        except EditqError as exc:
            raise ProviderError(f"the provider returned an unusable output: {exc.message}",
                                code="provider_bad_output", task_failed=True) from exc
        key = output_key(job.id, index, info.extension)
        storage.put(key, info.data, info.content_type)
        outputs.append({"key": key, "content_type": info.content_type, "width": info.width,
                        "height": info.height, "bytes": len(info.data),
                        "content_filtered": bool(result.metadata.get("content_filtered"))})
    return outputs


def run_job(job_id: str, settings: Settings, storage: Storage,
            scheduler: Scheduler) -> RunOutcome:
    """First step of an attempt: claim the job and submit it to its provider."""
    with session_scope(settings.database_url) as session:
        job = claim(session, job_id, settings.job_lease_seconds)
    if job is None:
        return RunOutcome(job_id, "skipped", "not queued (running elsewhere or finished)")

    spec = get_catalog().get(job.model)
    try:
        provider = get_provider(spec.provider, settings)
        images, mask = _load_inputs(storage, job)
        options = build_options(images=images, operation=job.operation, model=job.model,
                                prompt=job.prompt, mask=mask,
                                negative_prompt=job.negative_prompt, options=job.options)
        with session_scope(settings.database_url) as session:
            mark_submitting(session, job_id)
        # The slot is taken just before the call, so what the limiter counts is what
        # the provider sees, within milliseconds.
        limiter = get_limiter(job.provider, settings)
        if limiter is not None and (wait := limiter.before_submit(job_id)):
            delay = _spread(wait)
            with session_scope(settings.database_url) as session:
                unclaimed = unclaim(session, job_id, f"{job.provider} limit", delay)
            if unclaimed:
                scheduler.run(job_id, delay)
            return RunOutcome(job_id, "throttled", f"{job.provider} limit: {wait:.2f}s")
        submitted = provider.submit(spec, options, webhook_url(settings, spec.provider))
    except EditqError as exc:
        return _handle_failure(job, settings, exc, scheduler)

    if submitted.result is not None:
        return _finish(job, spec, submitted.result, settings, storage, scheduler)
    assert submitted.request_id is not None
    first_look = max(settings.poll_initial_seconds, provider.min_poll_seconds)
    lease = first_look + settings.poll_lease_margin_seconds
    with session_scope(settings.database_url) as session:
        if not record_submitted(session, job_id, submitted.request_id, lease):
            add_event(session, job_id, "submitted_after_cancel",
                      request_id=submitted.request_id)
            return RunOutcome(job_id, "discarded", "job left running state during submit")
    scheduler.poll(job_id, first_look)
    return RunOutcome(job_id, "submitted", submitted.request_id)


def poll_job(job_id: str, settings: Settings, storage: Storage,
             scheduler: Scheduler) -> RunOutcome:
    """One look at the provider request of a running job; reschedules itself until done."""
    with session_scope(settings.database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None or job.status != RUNNING or not job.provider_request_id:
            return RunOutcome(job_id, "skipped", "no running provider request")
        extend_lease(session, job_id,
                     settings.poll_max_seconds + settings.poll_lease_margin_seconds)
    limiter = get_limiter(job.provider, settings)
    if limiter is not None and (wait := limiter.before_poll(job_id)):
        scheduler.poll(job_id, _spread(wait))
        return RunOutcome(job_id, "throttled", f"{job.provider} limit: {wait:.2f}s")
    spec = get_catalog().get(job.model)
    request_id = job.provider_request_id
    waited = (utcnow() - (job.provider_submitted_at or utcnow())).total_seconds()
    try:
        provider = get_provider(spec.provider, settings)
        polled = provider.poll(spec, request_id)
    except ProviderError as exc:
        if exc.task_failed or not exc.retryable:
            return _handle_failure(job, settings, exc, scheduler)
        polled = None  # the look failed, not the edit: look again later
        retry_after = exc.retry_after
    except EditqError as exc:
        return _handle_failure(job, settings, exc, scheduler)
    else:
        retry_after = None

    if polled is not None and polled.done and polled.result is not None:
        return _finish(job, spec, polled.result, settings, storage, scheduler)
    if waited > settings.provider_timeout_seconds:
        timeout = ProviderError(f"the provider did not finish request {request_id} within "
                                f"{settings.provider_timeout_seconds} s",
                                code="provider_timeout")
        return _handle_failure(job, settings, timeout, scheduler)
    delay = max(next_poll_delay(settings, waited), retry_after or 0.0,
                provider.min_poll_seconds)
    scheduler.poll(job_id, delay)
    return RunOutcome(job_id, "waiting", f"next look in {delay:.2f}s")


def _spread(wait: float) -> float:
    """Jitter a limiter's wait, so jobs refused together do not all come back together."""
    return wait * random.uniform(1.0, 1.5) + random.uniform(0.0, 0.05)


def _release(provider: str, job_id: str, settings: Settings) -> None:
    limiter = get_limiter(provider, settings)
    if limiter is not None:
        limiter.release(job_id)


def _finish(job: Job, spec: ModelSpec, result: ImageEditResult, settings: Settings,
            storage: Storage, scheduler: Scheduler) -> RunOutcome:
    _release(job.provider, job.id, settings)
    try:
        outputs = _store_outputs(storage, settings, job, result)
    except EditqError as exc:
        return _handle_failure(job, settings, exc, scheduler)
    cost = result.cost if result.cost is not None else spec.estimate(job.options, len(outputs))
    with session_scope(settings.database_url) as session:
        if succeed(session, job.id, outputs, cost):
            if result.metadata.get("content_filtered"):
                add_event(session, job.id, "content_filtered",
                          finish_reason=result.metadata.get("finish_reason"))
            return RunOutcome(job.id, "succeeded", f"{len(outputs)} output(s)")
        current = session.scalar(select(Job.status).where(Job.id == job.id))
        if current == CANCELED:
            add_event(session, job.id, "result_discarded", reason="canceled while running",
                      cost=str(cost))
    return RunOutcome(job.id, "discarded", "job left running state before it finished")


def _handle_failure(job: Job, settings: Settings, exc: EditqError,
                    scheduler: Scheduler) -> RunOutcome:
    _release(job.provider, job.id, settings)
    limiter = get_limiter(job.provider, settings)
    if limiter is not None and exc.code == "provider_rate_limited" and exc.retry_after:
        limiter.pause(exc.retry_after)
    with session_scope(settings.database_url) as session:
        attempts = session.scalar(select(Job.attempts).where(Job.id == job.id)) or job.attempts
        if exc.retryable and attempts < settings.job_max_attempts:
            delay = backoff_seconds(attempts, exc.retry_after)
            if requeue(session, job.id, f"{exc.code}: {exc.message}", delay):
                session.commit()
                scheduler.run(job.id, delay)
                return RunOutcome(job.id, "retry", f"{exc.code} after attempt {attempts}")
        if fail(session, job.id, exc.code, exc.message):
            return RunOutcome(job.id, "failed", exc.code)
    return RunOutcome(job.id, "discarded", "job left running state before it failed")
