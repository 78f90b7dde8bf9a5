"""Running one job: claim, edit, store the outputs, finish. Called by the worker's task.

Each step is safe to repeat: the claim is conditional, outputs are written
under deterministic keys, and the finishing update only moves a job that is
still running, so a redelivered message cannot produce a second result.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.config import Settings
from shared.db import session_scope
from shared.errors import EditqError, ProviderError
from shared.images import inspect_image
from shared.jobs import CANCELED, add_event, claim, fail, requeue, succeed
from shared.models import Job
from shared.providers.router import build_options, generate_image_edit
from shared.storage import Storage, output_key

log = logging.getLogger(__name__)

Schedule = Callable[[str, float], None]


@dataclass(frozen=True)
class RunOutcome:
    """What a run did; the task logs it, tests assert on it."""

    job_id: str
    action: str  # "skipped", "succeeded", "failed", "retry", "discarded"
    detail: str = ""


def backoff_seconds(attempt: int, retry_after: float | None, *, base: float = 1.0,
                    cap: float = 60.0) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After is a floor."""
    delay = random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    return max(delay, retry_after or 0.0)


def _load_inputs(storage: Storage, job: Job) -> tuple[list[bytes], bytes | None]:
    images = [storage.get(key) for key in job.input_keys]
    mask = storage.get(job.mask_key) if job.mask_key else None
    return images, mask


def _store_outputs(storage: Storage, settings: Settings, job: Job,
                   images: list[tuple[bytes, str]]) -> list[dict[str, Any]]:
    outputs = []
    for index, (data, _declared_type) in enumerate(images):
        # Never store what is not an image, whatever the provider claimed.
        try:
            info = inspect_image(data, field=f"output[{index}]",
                                 max_bytes=max(settings.max_image_bytes, 64 * 1024 * 1024),
                                 max_pixels=max(settings.max_image_pixels, 200_000_000))
        except EditqError as exc:
            raise ProviderError(f"the provider returned an unusable output: {exc.message}",
                                code="provider_bad_output") from exc
        key = output_key(job.id, index, info.extension)
        storage.put(key, info.data, info.content_type)
        outputs.append({"key": key, "content_type": info.content_type, "width": info.width,
                        "height": info.height, "bytes": len(info.data)})
    return outputs


def run_job(job_id: str, settings: Settings, storage: Storage,
            schedule_retry: Schedule) -> RunOutcome:
    url = settings.database_url
    with session_scope(url) as session:
        job = claim(session, job_id, settings.job_lease_seconds)
    if job is None:
        return RunOutcome(job_id, "skipped", "not queued (running elsewhere or finished)")

    try:
        images, mask = _load_inputs(storage, job)
        options = build_options(images=images, operation=job.operation, model=job.model,
                                prompt=job.prompt, mask=mask,
                                negative_prompt=job.negative_prompt, options=job.options)
        result = generate_image_edit(options, settings=settings)
        outputs = _store_outputs(storage, settings, job,
                                 [(img.data, img.content_type) for img in result.images])
    except EditqError as exc:
        return _handle_failure(job, settings, exc.code, exc.message, exc.retryable,
                               exc.retry_after, schedule_retry)
    except Exception as exc:  # storage or network trouble: worth another attempt
        log.exception("job %s: unexpected error", job_id)
        return _handle_failure(job, settings, "internal_error",
                               f"{type(exc).__name__} while running the job", True, None,
                               schedule_retry)

    with session_scope(url) as session:
        cost = result.cost if result.cost is not None else Decimal("0")
        if succeed(session, job_id, outputs, cost):
            return RunOutcome(job_id, "succeeded", f"{len(outputs)} output(s)")
        current = session.get(Job, job.seq)
        if current is not None and current.status == CANCELED:
            add_event(session, job_id, "result_discarded", reason="canceled while running")
    return RunOutcome(job_id, "discarded", "job left running state before it finished")


def _handle_failure(job: Job, settings: Settings, code: str, message: str, retryable: bool,
                    retry_after: float | None, schedule_retry: Schedule) -> RunOutcome:
    attempts = job.attempts
    with session_scope(settings.database_url) as session:
        if retryable and attempts < settings.job_max_attempts:
            delay = backoff_seconds(attempts, retry_after)
            if requeue(session, job.id, f"{code}: {message}", delay):
                session.commit()
                schedule_retry(job.id, delay)
                return RunOutcome(job.id, "retry", f"{code} after attempt {attempts}")
        if fail(session, job.id, code, message):
            return RunOutcome(job.id, "failed", code)
    return RunOutcome(job.id, "discarded", "job left running state before it failed")
