"""A followed request's end: collect its outputs, store them, and in one transaction
mark the job succeeded and charge its call; or settle a call that outlived its job.

Safe to repeat: outputs are written under deterministic keys and the success is a
conditional UPDATE, so a request finished twice (two engines followed it) records one
result and one charge. A job canceled while its call is out keeps being followed (its
outputs are not kept) until the call settles, and is charged only if the call completed.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from shared.config import Settings
from shared.db import session_scope
from shared.errors import EditqError, ProviderError, StorageUnavailable
from shared.images import inspect_image
from shared.jobs.failure import (
    current,
    fail_attempt,
    past_deadline,
    provider_failed,
    release_slot,
    settle_call,
)
from shared.jobs.outcomes import Action, RunOutcome
from shared.jobs.retry import Retries
from shared.jobs.schedule import followed_lease_seconds, next_look_seconds, timed_out
from shared.jobs.states import (
    DEADLINE_EXCEEDED,
    RUNNING,
    SUCCEEDED,
    add_event,
    extend_lease,
    fail_while_out,
    is_settling,
    succeed,
)
from shared.models import Job
from shared.money import ledger
from shared.providers.base import ImageEditResult
from shared.providers.catalog import ModelSpec
from shared.providers.pricing import Price
from shared.services import Services
from shared.storage import Storage, output_key, outputs_prefix

log = logging.getLogger(__name__)


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


def look_failed(job: Job, exc: EditqError, services: Services) -> RunOutcome:
    """What a failed look means: the edit failed (the job's outcome), or only the look
    did (WAITING: look again later, unless the provider has had too long)."""
    if isinstance(exc, ProviderError) and exc.retryable and not exc.task_failed:
        provider_failed(job.provider, services, exc)
        return look_again(job, services, exc.retry_after)
    return fail_attempt(job, services, exc)


def look_again(job: Job, services: Services, retry_after: float | None = None) -> RunOutcome:
    if (timeout := timed_out(job, services.settings)) is not None:
        return fail_attempt(job, services, timeout)
    provider = services.provider(job.provider)
    delay = next_look_seconds(services.settings, provider, job, retry_after)
    return RunOutcome(job.id, Action.WAITING, f"next look in {delay:.2f}s", delay=delay, job=job)


def mark_deadline(job: Job, services: Services) -> RunOutcome:
    """A job whose deadline passed while its call is out is over for its owner now; the
    call is still followed (WAITING, at once) until its cost settles."""
    if job.status == RUNNING and past_deadline(job):
        with session_scope(services.settings.database_url) as session:
            fail_while_out(session, job.id, DEADLINE_EXCEEDED,
                           f"the job's deadline ({job.deadline_at:%Y-%m-%dT%H:%M:%SZ}) "
                           "passed while the provider was working on it")
            session.commit()
            job = current(session, job.id) or job
    return RunOutcome(job.id, Action.WAITING, "deadline_exceeded; its call is still followed",
                      job=job)


def collect_and_finish(job: Job, answer: Any, services: Services) -> RunOutcome:
    """A look found the request done: collect its outputs (downloads), store, record."""
    spec = services.catalog.get(job.model)
    provider = services.provider(spec.provider)
    assert job.provider_request_id is not None
    try:
        result = provider.collect(spec, job.provider_request_id, answer)
    except EditqError as exc:
        return look_failed(job, exc, services)
    return finish(job, spec, result, services)


def _price(spec: ModelSpec, job: Job, result: ImageEditResult) -> Price:
    if result.cost is not None:
        return ledger.reported_price(result.cost, job.provider)
    return spec.price(job.options, max(1, len(result.images)))


def finish(job: Job, spec: ModelSpec, result: ImageEditResult,
           services: Services) -> RunOutcome:
    """The provider's result, from a look or straight from a synchronous submit."""
    settings, storage = services.settings, services.storage
    release_slot(job, services)
    price = _price(spec, job, result)
    if job.status != RUNNING:  # followed only to settle: nothing of it is kept
        with session_scope(settings.database_url) as session:
            if is_settling(current(session, job.id)):
                return settle_call(session, job, price, "completed after the job ended")
        return RunOutcome(job.id, Action.DISCARDED, "job left running state before it finished")
    # Not read again first: the success below is conditional, and a job that ended
    # meanwhile gets its outputs deleted and its call settled there.
    try:
        outputs = _store_outputs(storage, settings, job, result)
    except StorageUnavailable as exc:
        if job.provider_request_id:
            # The result waits at the provider: fetch it again later, never pay twice.
            delay = Retries.of(settings).backoff(2, exc.retry_after)
            with session_scope(settings.database_url) as session:
                add_event(session, job.id, "store_retry", reason=exc.message,
                          delay_seconds=round(delay, 3))
            return RunOutcome(job.id, Action.WAITING, f"storage: {exc.message}", delay=delay,
                              job=job)
        return fail_attempt(job, services, exc, billed=price)
    except EditqError as exc:
        return fail_attempt(job, services, exc, billed=price)
    with session_scope(settings.database_url) as session:
        if succeed(session, job.id, outputs):
            ledger.charge(session, job, price, reason="succeeded")  # (and closes)
            if result.metadata.get("content_filtered"):
                add_event(session, job.id, "content_filtered",
                          finish_reason=result.metadata.get("finish_reason"))
            return RunOutcome(job.id, Action.SUCCEEDED, f"{len(outputs)} output(s)")
        now = current(session, job.id)
        if is_settling(now):
            outcome = settle_call(session, job, price, "completed while the job was ending")
        elif now is not None and now.status == SUCCEEDED:
            # Finished twice (two workers followed it): the same outputs, under the same
            # keys, belong to the success already recorded. Nothing to delete.
            return RunOutcome(job.id, Action.DISCARDED, "the job had succeeded already")
        else:
            outcome = RunOutcome(job.id, Action.DISCARDED,
                                 "job left running state before it finished")
    _discard_outputs(storage, job)
    return outcome


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


def _discard_outputs(storage: Storage, job: Job) -> None:
    """Outputs written for a job that did not succeed with them are not kept."""
    try:
        storage.delete_prefix(outputs_prefix(job.tenant_id, job.id))
    except EditqError as exc:
        log.warning("job %s: could not delete its discarded outputs: %s", job.id, exc.message)
