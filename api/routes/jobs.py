"""/v1/jobs: submit, read (with long-poll), list, cancel, timeline.

Each handler's database work is one `Work` call (api.deps): a session of its
own, opened and closed in the thread that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.bodies import EDIT_REQUEST_BODY, read_edit_request
from api.deps import (
    CeleryDep,
    ChangesDep,
    CursorQuery,
    IdempotencyKeyDep,
    PrincipalDep,
    ServicesDep,
    SettingsDep,
    StorageDep,
    Work,
    WorkDep,
)
from api.schemas import DataErased, EventList, JobList, JobOut, Status
from shared import changes
from shared.errors import DataDeleted, InvalidInput, NotFound
from shared.formats import parse_instant
from shared.jobs import lookup, progress, states
from shared.jobs.submission import submit_job
from shared.jobs.views import event_view, job_view
from shared.queue import INTERACTIVE, enqueue_run, queue_for
from shared.retention import erase

log = logging.getLogger(__name__)
# Keys a metadata filter may name: plain ones, so every database reads the same path.
DateQuery = Annotated[str | None, Query(
    max_length=64, description="ISO 8601 date (its first instant) or date-time; UTC when "
                               "it has no offset")]
METADATA_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=202, response_model=JobOut, openapi_extra=EDIT_REQUEST_BODY)
async def create_job(request: Request, response: Response, services: ServicesDep,
                     work: WorkDep, celery: CeleryDep, principal: PrincipalDep,
                     idempotency_key: IdempotencyKeyDep,
                     ) -> dict[str, Any]:
    req = await read_edit_request(request, services.settings)

    def submit(session: Session) -> tuple[dict[str, Any], bool]:
        job, created = submit_job(session, services, principal, req, idempotency_key)
        session.commit()
        return job_view(job, services.storage), created

    view, created = await work(submit)
    if created:
        await run_in_threadpool(enqueue_job, celery, work, view["id"],
                                queue_for(view["priority"]))
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{view['id']}"
    return view


def enqueue_job(celery: Any, work: Work, job_id: str, queue: str = INTERACTIVE) -> None:
    """The job row is committed; if the broker is down the job stays queued for the reaper."""
    try:
        enqueue_run(celery, job_id, queue=queue)
    except Exception as exc:
        error = type(exc).__name__
        log.error("job %s: enqueue failed: %s", job_id, error)
        work.now(lambda session: states.add_event(session, job_id, "enqueue_failed",
                                                error=error))


@router.get("", response_model=JobList)
def list_jobs(work: WorkDep, storage: StorageDep, principal: PrincipalDep,
              status: Status | None = None, model: str | None = None,
              created_after: DateQuery = None, created_before: DateQuery = None,
              batch_id: Annotated[str | None, Query(max_length=32)] = None,
              comparison_id: Annotated[str | None, Query(max_length=32)] = None,
              metadata: Annotated[list[str] | None, Query(
                  max_length=10, description="key:value; repeat for several, all must hold "
                                             "(string values)")] = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              cursor: CursorQuery = None) -> dict[str, Any]:
    pairs = []
    for item in metadata or []:
        key, sep, value = item.partition(":")
        if not sep or not METADATA_KEY.fullmatch(key):
            raise InvalidInput("metadata filters are key:value, the key made of letters, "
                               "digits, '_', '.' or '-' (at most 64)", field="metadata")
        pairs.append((key, value))
    filters = lookup.JobFilter(
        status=status, model=model, batch_id=batch_id,
        created_after=parse_instant(created_after, field="created_after")
        if created_after else None,
        created_before=parse_instant(created_before, field="created_before")
        if created_before else None,
        comparison_id=comparison_id, metadata=tuple(pairs))
    rows, next_cursor = work.now(lambda session: lookup.list_jobs(
        session, principal.tenant_id, filters, limit=limit, cursor=cursor))
    return {"data": [job_view(j, storage) for j in rows], "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, settings: SettingsDep, storage: StorageDep, work: WorkDep,
                  principal: PrincipalDep, listener: ChangesDep,
                  wait: Annotated[int, Query(ge=0, le=300,
                                             description="seconds to long-poll")] = 0,
                  ) -> dict[str, Any]:
    if wait > settings.max_wait_seconds:
        raise InvalidInput(f"wait is at most {settings.max_wait_seconds} seconds", field="wait")

    def read(session: Session) -> dict[str, Any]:
        return progress.job_with_position(session, storage, principal.tenant_id, job_id)

    # A long poll reads again only when the job changed (shared.changes), not on a timer.
    deadline = time.monotonic() + wait
    async with listener.watch(changes.job_key(job_id)) as changed:
        view = await work(read)
        while view["status"] not in states.TERMINAL and time.monotonic() < deadline:
            left = deadline - time.monotonic()
            # (while Redis is away, no change is heard: look every half second instead)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(),
                                       left if listener.subscribed.is_set() else min(0.5, left))
            changed.clear()
            view = await work(read)
    return view


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, work: WorkDep, storage: StorageDep,
               principal: PrincipalDep) -> dict[str, Any]:
    job = work.now(lambda session: lookup.cancel(session, principal.tenant_id, job_id))
    return job_view(job, storage)


@router.get("/{job_id}/events", response_model=EventList)
def job_events(job_id: str, work: WorkDep, principal: PrincipalDep) -> dict[str, Any]:
    events = work.now(lambda session: lookup.list_events(session, principal.tenant_id, job_id))
    return {"data": [event_view(e) for e in events]}


@router.get("/{job_id}/outputs/{index}", status_code=307,
            responses={307: {"description": "to the output's presigned URL"},
                       410: {"description": "the output was deleted (data_deleted)"}})
def get_output(job_id: str, index: int, work: WorkDep, storage: StorageDep,
               principal: PrincipalDep) -> RedirectResponse:
    """One output, by a link that does not expire: a redirect to a fresh presigned URL,
    or a 410 once retention or a request has deleted it."""
    view = work.now(lambda session: job_view(
        lookup.get_job(session, principal.tenant_id, job_id), storage))
    if not 0 <= index < len(view["outputs"]):
        raise NotFound(f"job {job_id} has no output {index}")
    url = view["outputs"][index]["url"]
    if url is None:
        raise DataDeleted(f"output {index} of job {job_id} was deleted at "
                          f"{view['outputs_deleted_at']}", deleted_at=view["outputs_deleted_at"])
    return RedirectResponse(url, status_code=307)


@router.delete("/{job_id}/data", response_model=DataErased)
def delete_job_data(job_id: str, work: WorkDep, services: ServicesDep,
                    principal: PrincipalDep) -> dict[str, Any]:
    """Delete an ended job's stored images now (outputs at once; inputs within minutes,
    unless another job of yours uses them). Its record, events and costs stay."""
    return work.now(lambda session: erase.erase_job(
        session, services.settings, services.storage, principal.tenant_id, job_id))
