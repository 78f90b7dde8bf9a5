"""An attempt: claim a queued job and submit it to its provider.

Each step is safe to repeat: the claim is conditional (one worker wins), "submitting"
is recorded before the POST (a worker that dies there leaves a job the reaper fails
rather than submits twice), and the provider's request id is saved the moment it
answers. From there the in-flight engine follows the request (shared.inflight), and
shared.jobs.finish takes the job to its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.db import session_scope, utcnow
from shared.errors import EditqError
from shared.images import load_input
from shared.inputs.resolve import resolve as resolve_inputs
from shared.jobs.failure import (
    current,
    deadline_failure,
    fail_attempt,
    past_deadline,
    provider_answered,
)
from shared.jobs.fallback import find_fallback
from shared.jobs.finish import finish
from shared.jobs.outcomes import Action, RunOutcome
from shared.jobs.retry import spread
from shared.jobs.schedule import first_look_seconds, followed_lease_seconds, webhook_url
from shared.jobs.states import (
    CANCELED,
    claim,
    mark_submitting,
    record_submitted,
    record_submitted_after_cancel,
    switch_model,
    unclaim,
)
from shared.models import Job
from shared.providers.base import ImageEditProvider
from shared.providers.catalog import ModelSpec
from shared.providers.router import build_options
from shared.services import Services


@dataclass
class _Inputs:
    """A job's inputs as its provider gets them: their bytes, or (a provider that fetches
    URLs, EDITQ_PROVIDER_FETCHES_INPUTS) presigned URLs of the stored ones, the bytes
    then only placeholders that say how many there are."""

    images: list[bytes]
    mask: bytes | None
    urls: list[str] | None = None
    mask_url: str | None = None


def _inputs(services: Services, job: Job, spec: ModelSpec,
            provider: ImageEditProvider) -> _Inputs:
    if job.input_refs is not None and not job.input_keys:
        return _Inputs(*resolve_inputs(services, job, spec))  # its first attempt: fetch them
    if (services.settings.provider_fetches_inputs and provider.fetches_urls
            and job.inputs_upright):
        storage = services.storage
        return _Inputs([b""] * len(job.input_keys), b"" if job.mask_key else None,
                       [storage.presigned_get_url(key) for key in job.input_keys],
                       storage.presigned_get_url(job.mask_key) if job.mask_key else None)
    return _Inputs(*_load_inputs(services, job))


def _load_inputs(services: Services, job: Job) -> tuple[list[bytes], bytes | None]:
    """The stored inputs, checked again as the API checked them and each turned upright
    as its EXIF orientation says (the API checked them as displayed; a provider may
    ignore the tag). An input no decoder can read fails the job as `invalid_image`."""
    settings, storage = services.settings, services.storage
    limits: dict[str, Any] = {"max_bytes": settings.max_image_bytes,
                              "max_pixels": settings.max_image_pixels}
    images = [load_input(storage.get(key), field=f"images[{n}]", **limits)
              for n, key in enumerate(job.input_keys)]
    mask = (load_input(storage.get(job.mask_key), field="mask", **limits)
            if job.mask_key else None)
    return images, mask


def run_job(job_id: str, services: Services) -> RunOutcome:
    """Claim the job and submit it: SUBMITTED (follow it), a result at once (synchronous
    providers), or a wait or a retry (run again after `delay`)."""
    settings = services.settings
    with session_scope(settings.database_url) as session:
        job = claim(session, job_id, settings.job_lease_seconds)
    if job is None:
        return RunOutcome(job_id, Action.SKIPPED, "not queued (running elsewhere or finished)")
    if past_deadline(job):
        return deadline_failure(job, services, "before an attempt could start")

    spec = services.catalog.get(job.model)
    try:
        provider = services.provider(spec.provider)
        inputs = _inputs(services, job, spec, provider)
        breaker = services.breaker(job.provider)
        if breaker is not None and (wait := breaker.allow()):
            if inputs.urls is not None:  # a fallback is checked against the bytes
                inputs = _Inputs(*_load_inputs(services, job))
            switched = (find_fallback(job, spec, inputs.images, inputs.mask, services)
                        if settings.breaker_fallback else None)
            if switched is None:
                return _wait(job, services, wait, f"{job.provider} circuit open")
            job, spec = _switch(job, spec, *switched, services)
            provider = services.provider(spec.provider)
        options = build_options(images=inputs.images, operation=job.operation,
                                model=job.model, prompt=job.prompt, mask=inputs.mask,
                                negative_prompt=job.negative_prompt, options=job.options)
        options.image_urls, options.mask_url = inputs.urls, inputs.mask_url
        with session_scope(settings.database_url) as session:
            if not mark_submitting(session, job_id):
                return RunOutcome(job_id, Action.DISCARDED, "canceled before it was submitted")
        # The slot is taken just before the call, so what the limiter counts is what
        # the provider sees, within milliseconds.
        limiter = services.limiter(job.provider)
        if limiter is not None and (wait := limiter.before_submit(job_id,
                                                                  services.bulk(job))):
            return _wait(job, services, wait, f"{job.provider} limit")
        submitted = provider.submit(spec, options, webhook_url(settings, spec.provider))
    except EditqError as exc:
        return fail_attempt(job, services, exc)
    provider_answered(job.provider, services)

    if submitted.result is not None:
        return finish(job, spec, submitted.result, services)
    assert submitted.request_id is not None
    with session_scope(settings.database_url) as session:
        # Canceled while the POST was out: the call is followed only to settle its cost.
        if not record_submitted(session, job_id, submitted.request_id,
                                followed_lease_seconds(settings)):
            if not record_submitted_after_cancel(session, job_id, submitted.request_id):
                return RunOutcome(job_id, Action.DISCARDED, "job left running state during submit")
            job.status, job.cost_actual = CANCELED, None
    # What the rows now say, without reading them again: the engine follows this copy.
    job.provider_request_id, job.provider_state = submitted.request_id, "submitted"
    job.provider_submitted_at = utcnow()
    return RunOutcome(job_id, Action.SUBMITTED, submitted.request_id,
                      delay=first_look_seconds(settings, provider), job=job)


def _wait(job: Job, services: Services, wait: float, reason: str) -> RunOutcome:
    """Put a job that may not call its provider yet back in the queue, no attempt spent,
    unless it would come back after its deadline."""
    delay = spread(wait)
    if past_deadline(job, delay):
        return deadline_failure(job, services, f"while it waited ({reason})")
    with session_scope(services.settings.database_url) as session:
        if not unclaim(session, job.id, reason, delay):
            return RunOutcome(job.id, Action.DISCARDED, f"{reason}; the job ended meanwhile")
    return RunOutcome(job.id, Action.THROTTLED, f"{reason}: {wait:.2f}s", delay=delay)


def _switch(job: Job, spec: ModelSpec, alt: ModelSpec, options: dict[str, Any],
            services: Services) -> tuple[Job, ModelSpec]:
    with session_scope(services.settings.database_url) as session:
        if not switch_model(session, job.id, alt.id, alt.provider, options,
                            reason=f"{spec.provider} circuit open"):
            raise EditqError("the job left running state while falling back")
        now = current(session, job.id)
    assert now is not None
    return now, alt
