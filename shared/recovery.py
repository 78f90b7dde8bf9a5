"""Finding running jobs whose worker has gone, and putting them back on their way.

A running job holds a lease that every step renews. Past it, the job is
presumed abandoned (its worker died, or its message was lost) and is resumed
from what the database says, never by guessing:

- a saved provider request id: polling resumes on that request (no new submit);
- "submitting" with no id: the POST may have reached the provider, so the job
  fails with `provider_outcome_unknown` rather than risk a second paid call;
- otherwise it never reached the provider: it is queued again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.jobs import RUNNING, add_event, fail, requeue
from shared.models import Job
from shared.pipeline import Scheduler


@dataclass
class Recovered:
    polling: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _take(settings: Settings, job_id: str, expired_before: datetime) -> Job | None:
    """Renew an expired lease conditionally, so two reapers never act on the same job."""
    lease = utcnow() + timedelta(
        seconds=settings.poll_max_seconds + settings.poll_lease_margin_seconds)
    with session_scope(settings.database_url) as session:
        taken = session.execute(
            update(Job).where(Job.id == job_id, Job.status == RUNNING,
                              Job.lease_expires_at < expired_before)
            .values(lease_expires_at=lease).execution_options(synchronize_session=False))
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return session.scalar(select(Job).where(Job.id == job_id))


def recover_expired_leases(settings: Settings, scheduler: Scheduler,
                           limit: int = 500) -> Recovered:
    now = utcnow()
    with session_scope(settings.database_url) as session:
        stale = list(session.scalars(
            select(Job.id).where(Job.status == RUNNING, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at).limit(limit)))
    done = Recovered()
    for job_id in stale:
        job = _take(settings, job_id, now)
        if job is None:
            continue
        with session_scope(settings.database_url) as session:
            if job.provider_request_id:
                add_event(session, job_id, "poll_resumed", request_id=job.provider_request_id)
                session.commit()
                scheduler.poll(job_id, 0)
                done.polling.append(job_id)
            elif job.provider_state == "submitting":
                fail(session, job_id, "provider_outcome_unknown",
                     "the worker stopped while submitting to the provider; the request may "
                     "have been accepted (and billed), so it is not sent again")
                done.failed.append(job_id)
            elif requeue(session, job_id, "worker_lost: lease expired before submitting", 0):
                session.commit()
                scheduler.run(job_id, 0)
                done.requeued.append(job_id)
    return done
