"""The reaper: finding jobs whose message or worker is gone, and putting them back on their way.

Every job that is waiting for something holds a lease in `lease_expires_at`:
- a queued job: when its run message is due. Long past it (queued_stale_seconds),
  the message is presumed lost (a broker restart that lost its data, a crash
  between commit and enqueue) and is sent again. A duplicate is harmless: only
  one claim can succeed;
- a running job, or a canceled one whose provider call is still settling: until
  when its worker is presumed alive; every step renews it.

Past a lease, the job is resumed from what the database says, never by guessing:
- a saved provider request id: the request is followed again (no new submit);
- "submitting" with no id: the POST may have reached the provider, so a running
  job fails with `provider_outcome_unknown` (and a settling one settles with its
  cost unknown) rather than risk a second paid call;
- otherwise it never reached the provider: it is queued again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope, utcnow, written
from shared.errors import EditqError
from shared.jobs.schedule import followed_lease_seconds
from shared.jobs.states import QUEUED, RUNNING, SETTLING, add_event, fail, requeue, settle
from shared.models import Batch, Job
from shared.queue import enqueue_expansion, enqueue_follow, enqueue_run
from shared.storage import Storage, outputs_prefix

log = logging.getLogger(__name__)


@dataclass
class Recovered:
    """What one pass found; the caller sends what comes next (runs for `resent` and
    `requeued`, follows for `following`, expansions), each on the job's own queue."""

    following: list[str] = field(default_factory=list)  # a request to follow again
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)  # queued jobs whose message was lost
    settled: list[str] = field(default_factory=list)
    expansions: list[str] = field(default_factory=list)  # batches whose expander died
    queues: dict[str, str] = field(default_factory=dict)  # job id: its queue

    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in vars(self).items() if name != "queues"}


def _take(session: Session, job_id: str, waiting: ColumnElement[bool], expired_before: datetime,
          lease: datetime) -> Job | None:
    """Renew an expired lease conditionally, so two reapers never act on the same job."""
    if not written(session, update(Job)
                   .where(Job.id == job_id, waiting, Job.lease_expires_at < expired_before)
                   .values(lease_expires_at=lease)
                   .execution_options(synchronize_session=False), Job.id):
        return None
    return session.scalar(select(Job).where(Job.id == job_id)
                          .execution_options(populate_existing=True))


def recover(settings: Settings, storage: Storage | None = None,
            limit: int = 500) -> Recovered:
    """One pass: lost messages first (cheap to resend), then abandoned leases; and the
    batches whose expansion has no live worker, for the caller to enqueue again (a
    second expansion message is harmless: one worker at a time holds the batch).

    With `storage`, a job ended here (its worker died mid-call) loses any output that
    worker had written before it could record it: nothing unrecorded is left behind.
    """
    done = Recovered()
    _resend_lost_messages(settings, limit, done)
    _resume_expired_leases(settings, limit, done)
    with session_scope(settings.database_url) as session:
        done.expansions = list(session.scalars(select(Batch.id).where(
            Batch.status == "expanding", or_(Batch.lease_expires_at.is_(None),
                                             Batch.lease_expires_at < utcnow()))
            .limit(limit)))
    if storage is not None and (ended := done.failed + done.settled):
        with session_scope(settings.database_url) as session:
            tenants = {job_id: tenant for job_id, tenant in session.execute(
                select(Job.id, Job.tenant_id).where(Job.id.in_(ended)))}
        for job_id in ended:
            try:
                storage.delete_prefix(outputs_prefix(tenants[job_id], job_id))
            except EditqError as exc:
                log.warning("job %s: could not delete unrecorded outputs: %s", job_id,
                            exc.message)
    return done


def _resend_lost_messages(settings: Settings, limit: int,
                          done: Recovered) -> None:
    now = utcnow()
    overdue = now - timedelta(seconds=settings.queued_stale_seconds)
    with session_scope(settings.database_url) as session:
        stale = list(session.scalars(
            select(Job.id).where(Job.status == QUEUED, Job.lease_expires_at < overdue)
            .order_by(Job.lease_expires_at).limit(limit)))
    for job_id in stale:
        with session_scope(settings.database_url) as session:
            job = _take(session, job_id, Job.status == QUEUED, overdue,
                        now + timedelta(seconds=settings.queued_stale_seconds))
            if job is None:
                continue
            add_event(session, job_id, "message_resent",
                      reason="queued past its due time with no worker taking it")
        done.resent.append(job_id)
        done.queues[job_id] = job.queue


def _resume_expired_leases(settings: Settings, limit: int,
                           done: Recovered) -> None:
    now = utcnow()
    waiting = or_(Job.status == RUNNING, SETTLING)
    lease = now + timedelta(seconds=followed_lease_seconds(settings))
    with session_scope(settings.database_url) as session:
        stale = list(session.scalars(
            select(Job.id).where(waiting, Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at).limit(limit)))
    for job_id in stale:
        with session_scope(settings.database_url) as session:
            job = _take(session, job_id, waiting, now, lease)
            if job is None:
                continue
            if job.provider_request_id:
                add_event(session, job_id, "follow_resumed", request_id=job.provider_request_id)
                done.following.append(job_id)
                done.queues[job_id] = job.queue
            elif job.status != RUNNING:
                settle(session, job_id, "its worker stopped while submitting; whether the "
                       "provider billed the call cannot be known", charged=None)
                done.settled.append(job_id)
            elif job.provider_state == "submitting":
                fail(session, job_id, "provider_outcome_unknown",
                     "the worker stopped while submitting to the provider; the request may "
                     "have been accepted (and billed), so it is not sent again")
                done.failed.append(job_id)
            elif requeue(session, job_id, "worker_lost: lease expired before submitting", 0):
                done.requeued.append(job_id)
                done.queues[job_id] = job.queue


def send(app: Celery, found: Recovered,
         follow: Callable[[str], None] | None = None) -> None:
    """Send what a pass found: runs and expansions as tasks, each on its job's queue; the
    requests to follow to `follow` (a worker's pass: its own engine), else as follow tasks
    (`editq reaper --once`, outside any worker)."""
    for job_id in found.resent + found.requeued:
        enqueue_run(app, job_id, queue=found.queues[job_id])
    for job_id in found.following:
        if follow is not None:
            follow(job_id)
        else:
            enqueue_follow(app, job_id, queue=found.queues[job_id])
    for batch_id in found.expansions:
        enqueue_expansion(app, batch_id)
