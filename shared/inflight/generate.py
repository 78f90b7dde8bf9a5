"""`generate_image_edit()`: one edit, start to end, in the calling thread's time.

The Image Studio plan named this the unified entry point. Here it runs the edit as a job,
through the code the service runs: the job is submitted as the API submits it (checks,
stored inputs, budget), an attempt claims and submits it as the worker does, and a
private in-flight engine follows the request and finishes it. There is no second way to
wait on a provider: scripts and tests that call this see what the worker does.
"""

from __future__ import annotations

import queue
import time

from sqlalchemy import select

from shared.db import session_scope
from shared.errors import ProviderError
from shared.inflight.engine import Engine
from shared.jobs import lookup
from shared.jobs.attempt import run_job
from shared.jobs.outcomes import RunOutcome
from shared.jobs.states import SUCCEEDED, TERMINAL
from shared.jobs.submission import EditRequest, submit_job
from shared.models import Job
from shared.providers.base import ImageEditOptions, ImageEditResult, OutputImage
from shared.services import Services
from shared.tenants import Principal, get_or_create_tenant

# The tenant scripts' jobs belong to unless they name one.
SCRIPTS_TENANT = "scripts"


def generate_image_edit(options: ImageEditOptions, services: Services, *,
                        tenant: str = SCRIPTS_TENANT, timeout: float = 600.0) -> ImageEditResult:
    """Run one edit as a job of `tenant` and answer its result; a job that fails raises
    its error (an `EditqError` with the job's error code), one that runs past `timeout`
    is canceled and raises `provider_timeout`."""
    principal = _principal(services, tenant)
    request = EditRequest(images=list(options.images), operation=options.operation,
                          model=options.model, prompt=options.prompt,
                          negative_prompt=options.negative_prompt, mask=options.mask,
                          options=dict(options.extra))
    with session_scope(services.settings.database_url) as session:
        job, _ = submit_job(session, services, principal, request)
        job_id = job.id
    ended: queue.Queue[RunOutcome] = queue.Queue()
    engine = Engine(services, run_later=lambda job, delay: None, ended=ended.put)
    engine.start()
    deadline = time.monotonic() + timeout
    try:
        outcome = run_job(job_id, services)
        while outcome.follow or outcome.run_again:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if outcome.run_again:  # another attempt, after its backoff
                time.sleep(min(outcome.delay, left))
                outcome = run_job(job_id, services)
                continue
            assert outcome.job is not None
            engine.follow(outcome.job, outcome.delay)
            try:
                outcome = ended.get(timeout=left)
            except queue.Empty:
                break
    finally:
        engine.stop(hand_back=lambda jobs: None, timeout=2.0)
    return _result(services, principal, job_id)


def _principal(services: Services, name: str) -> Principal:
    with session_scope(services.settings.database_url) as session:
        tenant = get_or_create_tenant(session, name)
        return Principal(tenant.id, tenant.name, is_admin=False)


def _result(services: Services, principal: Principal, job_id: str) -> ImageEditResult:
    with session_scope(services.settings.database_url) as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        if job.status not in TERMINAL:
            lookup.cancel(session, principal.tenant_id, job_id)
            raise ProviderError(f"job {job_id} did not finish in time", code="provider_timeout")
    if job.status != SUCCEEDED:
        raise ProviderError(job.error_message or f"job {job_id} {job.status}",
                            code=job.error_code or job.status)
    return ImageEditResult(
        images=[OutputImage(services.storage.get(o["key"]), o["content_type"])
                for o in job.outputs],
        provider=job.provider, model=job.model, provider_request_id=job.provider_request_id,
        metadata={"job_id": job.id}, cost=job.cost_actual)
