"""A tenant's jobs: find one, list them, read a timeline, cancel one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, literal, null, select
from sqlalchemy.orm import Session

from shared.db import Money, newest_first, utcnow
from shared.errors import JobNotCancelable, NotFound
from shared.jobs.states import TERMINAL, transition
from shared.models import Job, JobEvent


def cancel(session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel a job that has not finished; a running job's result is then discarded.

    A job that never reached its provider costs nothing, known at once. One whose
    call is out (provider_state set) keeps `cost_actual` unknown until that call
    settles: the worker follows it to its end and charges it if it was billed.
    The choice is made inside the UPDATE, so it sees the row as the cancel finds it.
    """
    job = get_job(session, tenant_id, job_id)
    sent = Job.provider_state.is_not(None)
    if job.status in TERMINAL or not transition(
        session, job_id, "canceled",
        {"was": job.status}, finished_at=utcnow(),
        cost_actual=case((sent, null()), else_=literal(Decimal(0), Money())),
        # A call still out keeps its lease: if its worker dies, the reaper resumes it.
        lease_expires_at=case((sent, Job.lease_expires_at), else_=null()),
    ):
        session.refresh(job)
        raise JobNotCancelable(f"job {job_id} is already {job.status}", job_status=job.status)
    session.refresh(job)
    return job


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Another tenant's job is indistinguishable from a missing one."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise NotFound(f"no job {job_id}", job_id=job_id)
    return job


def list_events(session: Session, tenant_id: str, job_id: str) -> list[JobEvent]:
    get_job(session, tenant_id, job_id)
    return list(session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    batch_id: str | None = None
    comparison_id: str | None = None
    # (key, value) pairs a job's metadata must all hold, as strings.
    metadata: tuple[tuple[str, str], ...] = ()


def list_jobs(session: Session, tenant_id: str, filters: JobFilter, *, limit: int,
              cursor: str | None = None) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is opaque and stable under concurrent inserts."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if filters.status:
        query = query.where(Job.status == filters.status)
    if filters.model:
        query = query.where(Job.model == filters.model)
    if filters.created_after:
        query = query.where(Job.created_at >= filters.created_after)
    if filters.created_before:
        query = query.where(Job.created_at < filters.created_before)
    if filters.batch_id:
        query = query.where(Job.batch_id == filters.batch_id)
    if filters.comparison_id:
        query = query.where(Job.comparison_id == filters.comparison_id)
    for key, value in filters.metadata:
        query = query.where(Job.metadata_[key].as_string() == value)
    return newest_first(session, query, Job.seq, limit=limit, cursor=cursor)


def find_by_request(session: Session, provider: str, request_id: str) -> str | None:
    """The job whose call to `provider` is `request_id` (a provider's callback names it)."""
    return session.scalar(select(Job.id).where(Job.provider == provider,
                                               Job.provider_request_id == request_id))
