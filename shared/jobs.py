"""The job state machine. Every status change is a conditional UPDATE plus an event.

Conditional updates (`... WHERE status IN (...)`) are what make redelivered
messages harmless: a second worker's claim, or a finish after a cancel,
matches no row and changes nothing.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.errors import InvalidInput, JobNotCancelable, NotFound
from shared.models import Job, JobEvent

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = (
    "queued", "running", "succeeded", "failed", "canceled")
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:24]


def add_event(session: Session, job_id: str, type_: str, *, from_status: str | None = None,
              to_status: str | None = None, **detail: Any) -> None:
    session.add(JobEvent(job_id=job_id, type=type_, from_status=from_status,
                         to_status=to_status, detail=detail, at=utcnow()))


def transition(session: Session, job_id: str, from_statuses: tuple[str, ...], to_status: str,
               event: str, detail: dict[str, Any] | None = None, **values: Any) -> bool:
    """Move a job only if it is still in one of `from_statuses`; say whether it moved.

    The event is written in the same transaction, so the timeline never
    disagrees with the status.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(from_statuses))
        .values(status=to_status, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    previous = from_statuses[0] if len(from_statuses) == 1 else None
    add_event(session, job_id, event, from_status=previous, to_status=to_status,
              **(detail or {}))
    return True


def claim(session: Session, job_id: str, lease_seconds: int) -> Job | None:
    """queued -> running for exactly one worker; None if someone else has it or it is done."""
    now = utcnow()
    moved = transition(
        session, job_id, (QUEUED,), RUNNING, "started",
        started_at=now, attempts=Job.attempts + 1,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )
    if not moved:
        return None
    return session.scalar(select(Job).where(Job.id == job_id).execution_options(
        populate_existing=True))


def succeed(session: Session, job_id: str, outputs: list[dict[str, Any]],
            cost_actual: Decimal) -> bool:
    return transition(session, job_id, (RUNNING,), SUCCEEDED, "succeeded",
                      {"outputs": len(outputs)}, outputs=outputs, cost_actual=cost_actual,
                      finished_at=utcnow(), lease_expires_at=None)


def fail(session: Session, job_id: str, code: str, message: str,
         from_statuses: tuple[str, ...] = (RUNNING,)) -> bool:
    return transition(session, job_id, from_statuses, FAILED, "failed",
                      {"code": code, "message": message}, error_code=code,
                      error_message=message, finished_at=utcnow(), lease_expires_at=None)


def requeue(session: Session, job_id: str, reason: str, delay_seconds: float) -> bool:
    """running -> queued for another attempt (a new provider request); the caller enqueues."""
    return transition(session, job_id, (RUNNING,), QUEUED, "retry_scheduled",
                      {"reason": reason, "delay_seconds": round(delay_seconds, 3)},
                      lease_expires_at=None, provider_request_id=None, provider_state=None,
                      provider_submitted_at=None)


def unclaim(session: Session, job_id: str, reason: str, delay_seconds: float) -> bool:
    """running -> queued without spending an attempt: the job never reached the provider."""
    return transition(session, job_id, (RUNNING,), QUEUED, "throttled",
                      {"reason": reason, "delay_seconds": round(delay_seconds, 3)},
                      attempts=Job.attempts - 1, lease_expires_at=None, provider_state=None,
                      started_at=None)


def _update_running(session: Session, job_id: str, **values: Any) -> bool:
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == RUNNING)
        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_submitting(session: Session, job_id: str) -> bool:
    """Recorded before the POST: if the worker dies now, nobody knows if the provider has it."""
    return _update_running(session, job_id, provider_state="submitting")


def record_submitted(session: Session, job_id: str, request_id: str,
                     lease_seconds: float) -> bool:
    """The provider's request id, saved the moment it answers, so polling can resume."""
    now = utcnow()
    moved = _update_running(session, job_id, provider_state="submitted",
                            provider_request_id=request_id, provider_submitted_at=now,
                            lease_expires_at=now + timedelta(seconds=lease_seconds))
    if moved:
        add_event(session, job_id, "submitted", request_id=request_id)
    return moved


def extend_lease(session: Session, job_id: str, lease_seconds: float) -> bool:
    return _update_running(session, job_id,
                           lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))


def cancel(session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel a job that has not finished; a running job's result is then discarded."""
    job = get_job(session, tenant_id, job_id)
    if job.status in TERMINAL or not transition(
        session, job_id, (QUEUED, RUNNING), CANCELED, "canceled",
        {"was": job.status}, finished_at=utcnow(), lease_expires_at=None,
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


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this API gave out", field="cursor") from exc


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
    if cursor:
        query = query.where(Job.seq < decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(Job.seq.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return rows[:limit], next_cursor
