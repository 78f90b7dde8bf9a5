"""Where a job stands, for its stream and GET /v1/jobs/{id}: its place in its queue and the
events a watcher has not seen yet."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.jobs.lookup import get_job
from shared.jobs.states import QUEUED
from shared.jobs.views import event_view, job_view
from shared.models import Job, JobEvent
from shared.storage import Storage


def queue_position(session: Session, job: Job) -> int | None:
    """The queued jobs made before it on its queue (0: it is next), while it is queued.

    One count on the (queue, status, seq) index: cheap at the queue lengths editq keeps
    (a bulk queue is fed a few hundred at a time, shared.batches.expansion)."""
    if job.status != QUEUED:
        return None
    return int(session.scalar(select(func.count()).select_from(Job).where(
        Job.queue == job.queue, Job.status == QUEUED, Job.seq < job.seq)) or 0)


def job_with_position(session: Session, storage: Storage, tenant_id: str,
                      job_id: str) -> dict[str, Any]:
    job = get_job(session, tenant_id, job_id)
    return {**job_view(job, storage), "queue_position": queue_position(session, job)}


def job_since(session: Session, storage: Storage, tenant_id: str, job_id: str,
              after: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job as it is now, and its events after the event `after` (0: all), in order."""
    view = job_with_position(session, storage, tenant_id, job_id)
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id,
                                                    JobEvent.seq > after)
                             .order_by(JobEvent.seq))
    return view, [event_view(e) for e in events]
