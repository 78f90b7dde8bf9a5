"""Running one job: claim, submit, store the outputs, finish.

Each step is safe to repeat: the claim is conditional, the provider's request
id is saved the moment it answers, outputs are written under deterministic
keys, and the finishing update only moves a job that is still running, so a
redelivered message cannot produce a second result. Waiting is never done
here: once a request is submitted, the worker process's in-flight engine
(shared.inflight) looks at it, and calls the steps below (`collect_and_finish`,
`look_failed`, `mark_deadline`, ...) only when something changed.

Money (see shared.money.ledger): a provider call that the provider bills is charged
in the transaction that records its outcome. A job canceled while its call is
out keeps following that call (looks go on, outputs are not kept) until it
settles, and is charged only if the call completed.

(Longer than most modules: the attempt's steps and the steps after a look
share one set of failure, retry and finishing rules, which belong together.)
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.errors import EditqError, ProviderError, ProviderOutcomeUnknown, StorageUnavailable
from shared.images import inspect_image, load_input
from shared.inputs.resolve import resolve as resolve_inputs
from shared.jobs.fallback import find_fallback
from shared.jobs.states import (
    CANCELED,
    DEADLINE_EXCEEDED,
    RUNNING,
    SUCCEEDED,
    add_event,
    claim,
    extend_lease,
    fail,
    fail_while_out,
    is_settling,
    mark_submitting,
    record_submitted,
    record_submitted_after_cancel,
    requeue,
    settle,
    succeed,
    switch_model,
    unclaim,
)
from shared.models import Job
from shared.money import ledger
from shared.providers.base import ImageEditProvider, ImageEditResult
from shared.providers.catalog import ModelSpec
from shared.providers.classify import trips_breaker
from shared.providers.pricing import Price
from shared.providers.router import build_options
from shared.services import Services
from shared.storage import Storage, output_key, outputs_prefix

log = logging.getLogger(__name__)

class Scheduler(Protocol):
    """How the pipeline asks for its next step: attempts are Celery tasks; a submitted
    request is followed by the worker process's in-flight engine (shared.inflight)."""

    def run(self, job_id: str, delay: float) -> None: ...

    def follow(self, job: Job, delay: float) -> None: ...


class Action(StrEnum):
    """What one step of a job's pipeline did (a `str`: logs and tests read it as text)."""

    SKIPPED = "skipped"        # nothing to do: not queued, or someone else has it
    THROTTLED = "throttled"    # a limit or an open breaker: back in the queue, later
    SUBMITTED = "submitted"    # the provider has it; the engine follows it
    WAITING = "waiting"        # looked, still running
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"            # a new attempt is scheduled
    DISCARDED = "discarded"    # the job ended meanwhile (canceled): the result is dropped


@dataclass(frozen=True)
class RunOutcome:
    """What a step did; the task logs it, tests assert on it."""

    job_id: str
    action: Action
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


def calls_back(settings: Settings, provider: ImageEditProvider) -> bool:
    """The provider will call our webhook when the request ends: looks are a fallback
    then, every `poll_max_seconds`, for a callback that never came."""
    return provider.webhooks and webhook_url(settings, provider.name) is not None


def webhook_url(settings: Settings, provider: str) -> str | None:
    if not settings.public_base_url:
        return None
    return f"{settings.public_base_url}/v1/providers/{provider}/webhook"


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
            # The provider finished (and billed) the call; what it gave is unusable.
            raise ProviderError(f"the provider returned an unusable output: {exc.message}",
                                code="provider_bad_output", task_failed=True,
                                billed=True) from exc
        key = output_key(job.tenant_id, job.id, index, info.extension)
        storage.put(key, info.data, info.content_type)
        outputs.append({"key": key, "content_type": info.content_type, "width": info.width,
                        "height": info.height, "bytes": len(info.data),
                        "content_filtered": bool(result.metadata.get("content_filtered"))})
    return outputs


def run_job(job_id: str, services: Services, scheduler: Scheduler) -> RunOutcome:
    """First step of an attempt: claim the job and submit it to its provider."""
    settings = services.settings
    with session_scope(settings.database_url) as session:
        job = claim(session, job_id, settings.job_lease_seconds)
    if job is None:
        return RunOutcome(job_id, Action.SKIPPED, "not queued (running elsewhere or finished)")
    if past_deadline(job):
        return _deadline_failure(job, settings, "before an attempt could start")

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
                return _wait(job, settings, scheduler, wait, f"{job.provider} circuit open")
            job, spec = _switch(job, spec, *switched, settings)
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
        if limiter is not None and (wait := limiter.before_submit(job_id)):
            return _wait(job, settings, scheduler, wait, f"{job.provider} limit")
        submitted = provider.submit(spec, options, webhook_url(settings, spec.provider))
    except EditqError as exc:
        return _handle_failure(job, services, exc, scheduler)
    _provider_answered(job.provider, services)

    if submitted.result is not None:
        return _finish(job, spec, submitted.result, services, scheduler)
    assert submitted.request_id is not None
    first_look = (settings.poll_max_seconds if calls_back(settings, provider)
                  else max(settings.poll_initial_seconds, provider.min_poll_seconds))
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
    scheduler.follow(job, first_look)
    return RunOutcome(job_id, Action.SUBMITTED, submitted.request_id)


def followed_lease_seconds(settings: Settings) -> float:
    """How long a followed job's lease lasts: its engine renews it well before (once
    per interval for all its jobs); past it, the reaper presumes the worker dead."""
    return settings.poll_max_seconds + settings.poll_lease_margin_seconds


def past_deadline(job: Job, after: float = 0.0) -> bool:
    return job.deadline_at is not None and (
        utcnow() + timedelta(seconds=after) > job.deadline_at)


def _deadline_failure(job: Job, settings: Settings, when: str) -> RunOutcome:
    """Fail a job whose deadline has passed, with no call of its out (so it costs what
    its earlier calls cost, usually nothing)."""
    with session_scope(settings.database_url) as session:
        if fail(session, job.id, DEADLINE_EXCEEDED,
                f"the job's deadline ({job.deadline_at:%Y-%m-%dT%H:%M:%SZ}) passed {when}"):
            ledger.close(session, job.id)
            return RunOutcome(job.id, Action.FAILED, DEADLINE_EXCEEDED)
    return RunOutcome(job.id, Action.DISCARDED, "job left running state before its deadline")


def _wait(job: Job, settings: Settings, scheduler: Scheduler, wait: float,
          reason: str) -> RunOutcome:
    """Put a job that may not call its provider yet back in the queue, no attempt spent,
    unless it would come back after its deadline."""
    delay = _spread(wait)
    if past_deadline(job, delay):
        return _deadline_failure(job, settings, f"while it waited ({reason})")
    with session_scope(settings.database_url) as session:
        unclaimed = unclaim(session, job.id, reason, delay)
    if unclaimed:
        scheduler.run(job.id, delay)
    return RunOutcome(job.id, Action.THROTTLED, f"{reason}: {wait:.2f}s")


def _switch(job: Job, spec: ModelSpec, alt: ModelSpec, options: dict[str, Any],
            settings: Settings) -> tuple[Job, ModelSpec]:
    with session_scope(settings.database_url) as session:
        if not switch_model(session, job.id, alt.id, alt.provider, options,
                            reason=f"{spec.provider} circuit open"):
            raise EditqError("the job left running state while falling back")
        current = _current(session, job.id)
    assert current is not None
    return current, alt


def _provider_answered(provider: str, services: Services) -> None:
    breaker = services.breaker(provider)
    if breaker is not None:
        breaker.record_success()


def _provider_failed(provider: str, services: Services, exc: EditqError) -> None:
    breaker = services.breaker(provider)
    if breaker is not None and trips_breaker(exc.code):
        breaker.record_failure()


def followable(job: Job | None) -> bool:
    """A job with a provider request to look at: running, or canceled and settling."""
    return job is not None and bool(job.provider_request_id) and (
        job.status == RUNNING or is_settling(job))


def adopt(job_id: str, settings: Settings) -> Job | None:
    """Take a job to follow here: one handed back by a stopping worker, or resumed by a
    reaper outside any worker. (Only jobs no engine holds are sent to be adopted; were
    one followed twice, the second finish finds it finished and changes nothing.)"""
    with session_scope(settings.database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None or not followable(job):
            return None
        extend_lease(session, job_id, followed_lease_seconds(settings))
        return job


def mark_deadline(job: Job, settings: Settings) -> Job:
    """A job whose deadline passed while its call is out is over for its owner now; the
    call is still followed until its cost settles. Answers the job as it now is."""
    if job.status != RUNNING or not past_deadline(job):
        return job
    with session_scope(settings.database_url) as session:
        fail_while_out(session, job.id, DEADLINE_EXCEEDED,
                       f"the job's deadline ({job.deadline_at:%Y-%m-%dT%H:%M:%SZ}) "
                       "passed while the provider was working on it")
        session.commit()
        return _current(session, job.id) or job


def waited_seconds(job: Job) -> float:
    return (utcnow() - (job.provider_submitted_at or utcnow())).total_seconds()


def timed_out(job: Job, settings: Settings) -> ProviderError | None:
    """The error to fail a request with that has run past the provider timeout."""
    if waited_seconds(job) <= settings.provider_timeout_seconds:
        return None
    return ProviderError(f"the provider did not finish request {job.provider_request_id} "
                         f"within {settings.provider_timeout_seconds} s",
                         code="provider_timeout")


def next_look_seconds(settings: Settings, provider: ImageEditProvider, job: Job,
                      retry_after: float | None = None) -> float:
    schedule = (settings.poll_max_seconds if calls_back(settings, provider)
                else next_poll_delay(settings, waited_seconds(job)))
    return max(schedule, retry_after or 0.0, provider.min_poll_seconds)


def look_failed(job: Job, exc: EditqError, services: Services,
                scheduler: Scheduler) -> RunOutcome | None:
    """What a failed look means: the edit failed (the job's outcome), or only the look
    did (None: look again later)."""
    if isinstance(exc, ProviderError) and exc.retryable and not exc.task_failed:
        _provider_failed(job.provider, services, exc)
        return None
    return _handle_failure(job, services, exc, scheduler)


def fail_call(job: Job, exc: EditqError, services: Services,
              scheduler: Scheduler) -> RunOutcome:
    """The request is given up on (timed out): retry or fail the attempt."""
    return _handle_failure(job, services, exc, scheduler)


def collect_and_finish(job: Job, answer: Any, services: Services,
                       scheduler: Scheduler) -> RunOutcome:
    """A look found the request done: collect its outputs (downloads), store, record."""
    spec = services.catalog.get(job.model)
    provider = services.provider(spec.provider)
    assert job.provider_request_id is not None
    try:
        result = provider.collect(spec, job.provider_request_id, answer)
    except EditqError as exc:
        outcome = look_failed(job, exc, services, scheduler)
        if outcome is not None:
            return outcome
        return _look_again(job, provider, services, scheduler, getattr(exc, "retry_after", None))
    return _finish(job, spec, result, services, scheduler)


def _look_again(job: Job, provider: ImageEditProvider, services: Services,
                scheduler: Scheduler, retry_after: float | None) -> RunOutcome:
    if (timeout := timed_out(job, services.settings)) is not None:
        return _handle_failure(job, services, timeout, scheduler)
    delay = next_look_seconds(services.settings, provider, job, retry_after)
    scheduler.follow(job, delay)
    return RunOutcome(job.id, Action.WAITING, f"next look in {delay:.2f}s")


def poll_job(job_id: str, services: Services, scheduler: Scheduler) -> RunOutcome:
    """One look at a running job's provider request, blocking, with the steps the
    in-flight engine takes around its own looks (for scripts and step-by-step tests:
    the worker itself looks from shared.inflight)."""
    settings = services.settings
    with session_scope(settings.database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None or not followable(job):
            return RunOutcome(job_id, Action.SKIPPED, "no running provider request")
        extend_lease(session, job_id, followed_lease_seconds(settings))
    job = mark_deadline(job, settings)
    limiter = services.limiter(job.provider)
    if limiter is not None and (wait := limiter.before_poll(job_id)):
        scheduler.follow(job, _spread(wait))
        return RunOutcome(job_id, Action.THROTTLED, f"{job.provider} limit: {wait:.2f}s")
    spec = services.catalog.get(job.model)
    provider = services.provider(spec.provider)
    assert job.provider_request_id is not None
    try:
        polled = provider.poll(spec, job.provider_request_id)
    except EditqError as exc:
        if (outcome := look_failed(job, exc, services, scheduler)) is not None:
            return outcome
        return _look_again(job, provider, services, scheduler, getattr(exc, "retry_after", None))
    _provider_answered(job.provider, services)
    if polled.done and polled.result is not None:
        return _finish(job, spec, polled.result, services, scheduler)
    return _look_again(job, provider, services, scheduler, None)


def _spread(wait: float) -> float:
    """Jitter a limiter's wait, so jobs refused together do not all come back together."""
    return wait * random.uniform(1.0, 1.5) + random.uniform(0.0, 0.05)


def _release(provider: str, job_id: str, services: Services) -> None:
    limiter = services.limiter(provider)
    if limiter is not None:
        limiter.release(job_id)


def _current(session: Session, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id)
                          .execution_options(populate_existing=True))


def _price(spec: ModelSpec, job: Job, result: ImageEditResult) -> Price:
    if result.cost is not None:
        return ledger.reported_price(result.cost, job.provider)
    return spec.price(job.options, max(1, len(result.images)))


def _finish(job: Job, spec: ModelSpec, result: ImageEditResult, services: Services,
            scheduler: Scheduler) -> RunOutcome:
    settings, storage = services.settings, services.storage
    _release(job.provider, job.id, services)
    price = _price(spec, job, result)
    if job.status != RUNNING:  # followed only to settle: nothing of it is kept
        with session_scope(settings.database_url) as session:
            if is_settling(_current(session, job.id)):
                return _settle(session, job, price, "completed after the job ended")
        return RunOutcome(job.id, Action.DISCARDED, "job left running state before it finished")
    # Not read again first: the success below is conditional, and a job that ended
    # meanwhile gets its outputs deleted and its call settled there.
    try:
        outputs = _store_outputs(storage, settings, job, result)
    except StorageUnavailable as exc:
        if job.provider_request_id:
            # The result waits at the provider: fetch it again later, never pay twice.
            delay = backoff_seconds(2, exc.retry_after, base=settings.retry_backoff_base_seconds,
                                    cap=settings.retry_backoff_max_seconds)
            with session_scope(settings.database_url) as session:
                add_event(session, job.id, "store_retry", reason=exc.message,
                          delay_seconds=round(delay, 3))
            scheduler.follow(job, delay)
            return RunOutcome(job.id, Action.WAITING, f"storage: {exc.message}")
        return _handle_failure(job, services, exc, scheduler, billed=price)
    except EditqError as exc:
        return _handle_failure(job, services, exc, scheduler, billed=price)
    with session_scope(settings.database_url) as session:
        if succeed(session, job.id, outputs):
            ledger.charge(session, job, price, reason="succeeded")  # (and closes)
            if result.metadata.get("content_filtered"):
                add_event(session, job.id, "content_filtered",
                          finish_reason=result.metadata.get("finish_reason"))
            return RunOutcome(job.id, Action.SUCCEEDED, f"{len(outputs)} output(s)")
        current = _current(session, job.id)
        if is_settling(current):
            outcome = _settle(session, job, price, "completed while the job was ending")
        elif current is not None and current.status == SUCCEEDED:
            # Finished twice (two workers followed it): the same outputs, under the same
            # keys, belong to the success already recorded. Nothing to delete.
            return RunOutcome(job.id, Action.DISCARDED, "the job had succeeded already")
        else:
            outcome = RunOutcome(job.id, Action.DISCARDED,
                                 "job left running state before it finished")
    _discard_outputs(storage, job)
    return outcome


def _discard_outputs(storage: Storage, job: Job) -> None:
    """Outputs written for a job that did not succeed with them are not kept."""
    try:
        storage.delete_prefix(outputs_prefix(job.tenant_id, job.id))
    except EditqError as exc:
        log.warning("job %s: could not delete its discarded outputs: %s", job.id, exc.message)


def _settle(session: Session, job: Job, billed: Price | None, why: str,
            known: bool = True) -> RunOutcome:
    """A call that outlived its job (canceled, or failed by its deadline) has ended:
    charge it if the provider billed it, and close (unless whether it was billed cannot
    be known: then the cost stays unknown)."""
    if billed is not None:
        current = _current(session, job.id)
        reason = "canceled" if current is None or current.status == CANCELED else (
            current.error_code or "failed")
        ledger.charge(session, job, billed, reason=reason)
    total = ledger.close(session, job.id) if known else None
    settle(session, job.id, why, charged=total)
    return RunOutcome(job.id, Action.DISCARDED, f"canceled; its call settled at {total}")


def _handle_failure(job: Job, services: Services, exc: EditqError, scheduler: Scheduler,
                    billed: Price | None = None) -> RunOutcome:
    """Retry or fail the attempt. `billed` is the price of a call the provider billed
    although it failed us (a filtered result, an unusable output, lost storage)."""
    settings = services.settings
    _release(job.provider, job.id, services)
    _provider_failed(job.provider, services, exc)
    limiter = services.limiter(job.provider)
    if limiter is not None and exc.code == "provider_rate_limited" and exc.retry_after:
        limiter.pause(exc.retry_after)
    if billed is None and exc.extra.get("billed"):
        billed = services.catalog.get(job.model).price(job.options)
    # Whether the provider billed this call cannot be known (a submit sent but not
    # answered, a result gone): nothing is charged, and the cost is not claimed known.
    unknown = isinstance(exc, ProviderOutcomeUnknown) or bool(exc.extra.get("billing_unknown"))
    with session_scope(settings.database_url) as session:
        current = _current(session, job.id)
        if is_settling(current):
            return _settle(session, job, billed, f"failed after the job ended: {exc.code}",
                           known=not unknown)
        if billed is not None:
            ledger.charge(session, job, billed, reason=exc.code)
        attempts = current.attempts if current is not None else job.attempts
        if exc.retryable and attempts < settings.job_max_attempts:
            delay = backoff_seconds(attempts, exc.retry_after,
                                    base=settings.retry_backoff_base_seconds,
                                    cap=settings.retry_backoff_max_seconds)
            if past_deadline(job, delay):
                session.commit()
                return _deadline_failure(job, settings, f"before another attempt could run "
                                                        f"(the last one: {exc.code})")
            if requeue(session, job.id, f"{exc.code}: {exc.message}", delay):
                session.commit()
                scheduler.run(job.id, delay)
                return RunOutcome(job.id, Action.RETRY, f"{exc.code} after attempt {attempts}")
        if fail(session, job.id, exc.code, exc.message):
            if not unknown:
                ledger.close(session, job.id)
            return RunOutcome(job.id, Action.FAILED, exc.code)
    return RunOutcome(job.id, Action.DISCARDED, "job left running state before it failed")
