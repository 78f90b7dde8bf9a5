"""The job state machine. Every status change is a conditional UPDATE plus an event.

Conditional updates (`... WHERE status IN (...)`) are what make redelivered
messages harmless: a second worker's claim, or a finish after a cancel,
matches no row and changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    Update,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from shared import changes
from shared.db import utcnow, written
from shared.models import Job, JobEvent, Tenant
from shared.statuses import CANCELED as CANCELED
from shared.statuses import FAILED as FAILED
from shared.statuses import QUEUED as QUEUED
from shared.statuses import RUNNING as RUNNING
from shared.statuses import STATUSES as STATUSES
from shared.statuses import SUCCEEDED as SUCCEEDED
from shared.statuses import TERMINAL as TERMINAL
from shared.webhooks.outbox import record_job_event, wants_event

# The statuses are shared.statuses' (money, below jobs, names them too), re-exported above
# (`X as X`) so that `from shared.jobs.states import RUNNING` still works.
DEADLINE_EXCEEDED = "deadline_exceeded"
# The transitions users can subscribe to (a job that runs again after a retry is not
# started again: the outbox keeps one row per job and event).
WEBHOOK_EVENTS = {RUNNING: "job.started", SUCCEEDED: "job.succeeded", FAILED: "job.failed",
                  CANCELED: "job.canceled"}
# The job state machine, as data: each event, the statuses it may move a job from, and
# the status it moves it to. `transition()` reads it, so a move that is not here cannot
# be made; tests/shared/jobs/test_states.py checks the table and each move on a database.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "started": (frozenset({QUEUED}), RUNNING),                # claimed by one worker
    "succeeded": (frozenset({RUNNING}), SUCCEEDED),
    "failed": (frozenset({RUNNING}), FAILED),
    "retry_scheduled": (frozenset({RUNNING}), QUEUED),        # a new attempt, later
    "throttled": (frozenset({RUNNING}), QUEUED),              # never reached the provider
    "canceled": (frozenset({QUEUED, RUNNING}), CANCELED),
}
# A job that ended (canceled, or failed by its deadline) while its provider call was
# out: the call is followed, under a lease, until its cost is known. (A job failed as
# provider_outcome_unknown has no lease: there is no call to follow.)
SETTLING = and_(Job.status.in_((CANCELED, FAILED)), Job.cost_actual.is_(None),
                Job.provider_state.in_(("submitting", "submitted")),
                Job.lease_expires_at.is_not(None))


def is_settling(job: Job | None) -> bool:
    """The Python twin of SETTLING, for a row already loaded."""
    return (job is not None and job.status in (CANCELED, FAILED) and job.cost_actual is None
            and job.provider_state in ("submitting", "submitted")
            and job.lease_expires_at is not None)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:24]


# The hot path's statements are SQLAlchemy Core, built once and run on the session's
# connection with parameters: through the ORM (unit of work, ORM-enabled UPDATE, a new
# statement and its cache key at every call) they were a third of the worker's CPU
# (bench/README.md, issue 28: the profiles before and after).
_JOBS = cast(Table, Job.__table__)
_ADD_EVENT = insert(cast(Table, JobEvent.__table__))
# Every column of a job, as RETURNING gives them back, and the attribute each one fills.
JOB_COLUMNS = [(attr.key, attr.columns[0]) for attr in Job.__mapper__.column_attrs]


def job_of(row: Any) -> Job:
    """A detached job from a row RETURNING `JOB_COLUMNS` (first, in their order)."""
    return Job(**{key: row[n] for n, (key, _) in enumerate(JOB_COLUMNS)})


def add_event(session: Session, job_id: str, type_: str, *, from_status: str | None = None,
              to_status: str | None = None, **detail: Any) -> None:
    session.connection().execute(_ADD_EVENT, {
        "job_id": job_id, "type": type_, "from_status": from_status, "to_status": to_status,
        "detail": detail, "at": utcnow()})
    changes.note(session, changes.job_key(job_id))  # its streams read it after the commit


def transition(session: Session, job_id: str, event: str,
               detail: dict[str, Any] | None = None, **values: Any) -> bool:
    """Move a job as `TRANSITIONS[event]` says, only if it is still in a status the event
    may leave; say whether it moved.

    The event is written in the same transaction, so the timeline never
    disagrees with the status.
    """
    return _move(session, job_id, event, detail, **values) is not None


# Where the job's webhooks go, read by the UPDATE that moves it (no second query).
_WEBHOOK_URL = (select(Tenant.webhook_url).where(Tenant.id == Job.tenant_id)
                .correlate(Job).scalar_subquery())


# Values computed by the database that a move's statement may be built once with.
ATTEMPT_UP = _JOBS.c.attempts + 1
ATTEMPT_DOWN = _JOBS.c.attempts - 1
_REUSABLE = (ATTEMPT_UP, ATTEMPT_DOWN)
_MOVES: dict[tuple[Any, ...], Update] = {}


def _move_statement(event: str, values: dict[str, Any]) -> tuple[Update, dict[str, Any]]:
    """The UPDATE of one move and its parameters. Plain values are parameters; values the
    database computes are part of the statement, which is then kept for the next move of
    the same shape (unless such a value was built for this call: a cancel's CASE)."""
    plain = {k: v for k, v in values.items() if not isinstance(v, ColumnElement)}
    computed = {k: v for k, v in values.items() if isinstance(v, ColumnElement)}
    reusable = all(any(v is r for r in _REUSABLE) for v in computed.values())
    key = (event, tuple(sorted(plain)),
           tuple(sorted((k, _REUSABLE.index(v)) for k, v in computed.items()))
           if reusable else None)
    statement = _MOVES.get(key) if reusable else None
    if statement is None:
        sources, to_status = TRANSITIONS[event]
        # One status is `=`, not IN: an IN list is expanded anew at every execution.
        status = (_JOBS.c.status == next(iter(sources)) if len(sources) == 1
                  else _JOBS.c.status.in_(sorted(sources)))
        statement = (update(_JOBS)
                     .where(_JOBS.c.id == bindparam("p_job"), status)
                     .values(status=to_status, updated_at=bindparam("p_now"), **computed,
                             **{k: bindparam(f"p_{k}", type_=_JOBS.c[_column(k)].type)
                                for k in plain})
                     .returning(*(column for _, column in JOB_COLUMNS), _WEBHOOK_URL))
        if reusable:
            _MOVES[key] = statement
    return statement, {f"p_{k}": v for k, v in plain.items()}


def _column(attribute: str) -> str:
    return Job.__mapper__.column_attrs[attribute].columns[0].name


def _move(session: Session, job_id: str, event: str, detail: dict[str, Any] | None = None,
          **values: Any) -> Job | None:
    """`transition`, answering the job as the UPDATE left it (RETURNING: one statement;
    the job is a detached copy, built from the row)."""
    sources, to_status = TRANSITIONS[event]
    from_statuses = tuple(sorted(sources))
    statement, params = _move_statement(event, values)
    row = session.connection().execute(
        statement, {"p_job": job_id, "p_now": utcnow(), **params}).first()
    if row is None:
        return None
    job = job_of(row)
    tenant_url: str | None = row[-1]
    previous = from_statuses[0] if len(from_statuses) == 1 else None
    add_event(session, job_id, event, from_status=previous, to_status=to_status,
              **(detail or {}))
    # A move changes its batch's progress and its comparison's grid too; one that leaves
    # the queue moves every job behind it one place up.
    changes.note(session, *([changes.batch_key(job.batch_id)] if job.batch_id else []),
                 *([changes.comparison_key(job.comparison_id)] if job.comparison_id else []),
                 *([changes.queue_key(job.queue)] if QUEUED in sources else []))
    webhook_event = WEBHOOK_EVENTS.get(to_status)
    if webhook_event is not None and wants_event(job, tenant_url, webhook_event):
        record_job_event(session, job_id, webhook_event)
    return job


def claim(session: Session, job_id: str, lease_seconds: int) -> Job | None:
    """queued -> running for exactly one worker; None if someone else has it or it is done."""
    now = utcnow()
    return _move(
        session, job_id, "started",
        started_at=now, attempts=ATTEMPT_UP,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
    )


def succeed(session: Session, job_id: str, outputs: list[dict[str, Any]]) -> bool:
    """running -> succeeded; the caller charges the call in the same transaction."""
    return transition(session, job_id, "succeeded",
                      {"outputs": len(outputs)}, outputs=outputs,
                      finished_at=utcnow(), lease_expires_at=None)


def fail(session: Session, job_id: str, code: str, message: str) -> bool:
    return transition(session, job_id, "failed",
                      {"code": code, "message": message}, error_code=code,
                      error_message=message, finished_at=utcnow(), lease_expires_at=None)


def fail_while_out(session: Session, job_id: str, code: str, message: str) -> bool:
    """running -> failed while its provider call is still out: the job is over for its
    owner now, and the call is followed (its lease kept) until its cost settles."""
    return transition(session, job_id, "failed",
                      {"code": code, "message": message, "call_settling": True},
                      error_code=code, error_message=message, finished_at=utcnow())


def requeue(session: Session, job_id: str, reason: str, delay_seconds: float) -> bool:
    """running -> queued for another attempt (a new provider request); the caller enqueues.

    A queued job's lease is when its message is due: the reaper re-enqueues one whose
    message is long overdue (lost with the broker's data)."""
    return transition(session, job_id, "retry_scheduled",
                      {"reason": reason, "delay_seconds": round(delay_seconds, 3)},
                      lease_expires_at=utcnow() + timedelta(seconds=delay_seconds),
                      provider_request_id=None, provider_state=None,
                      provider_submitted_at=None)


def unclaim(session: Session, job_id: str, reason: str, delay_seconds: float) -> bool:
    """running -> queued without spending an attempt: the job never reached the provider."""
    return transition(session, job_id, "throttled",
                      {"reason": reason, "delay_seconds": round(delay_seconds, 3)},
                      attempts=ATTEMPT_DOWN, provider_state=None, started_at=None,
                      lease_expires_at=utcnow() + timedelta(seconds=delay_seconds))


_RUNNING_UPDATES: dict[tuple[str, ...], Update] = {}


def _update_running(session: Session, job_id: str, **values: Any) -> bool:
    """Set `values` on a job that is still running; say whether it was (RETURNING)."""
    names = tuple(sorted(values))
    statement = _RUNNING_UPDATES.get(names)
    if statement is None:
        statement = _RUNNING_UPDATES[names] = (
            update(_JOBS).where(_JOBS.c.id == bindparam("p_job"), _JOBS.c.status == RUNNING)
            .values(updated_at=bindparam("p_now"),
                    **{k: bindparam(f"p_{k}", type_=_JOBS.c[_column(k)].type) for k in names})
            .returning(_JOBS.c.id))
    return session.connection().execute(statement, {
        "p_job": job_id, "p_now": utcnow(), **{f"p_{k}": v for k, v in values.items()},
    }).first() is not None


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


def switch_model(session: Session, job_id: str, model: str, provider: str,
                 options: dict[str, Any], reason: str) -> bool:
    """A running job moves to another model (a fallback); the timeline says from what."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None:
        return False
    moved = bool(written(
        session, update(Job).where(Job.id == job_id, Job.status == RUNNING)
        .values(model=model, provider=provider, options=options, updated_at=utcnow(),
                fallback_from=job.fallback_from or job.model)
        .execution_options(synchronize_session=False), Job.id))
    if moved:
        add_event(session, job_id, "fell_back", from_model=job.model, to_model=model,
                  reason=reason)
    return moved


def record_submitted_after_cancel(session: Session, job_id: str, request_id: str) -> bool:
    """The POST answered after the job was canceled: keep its id, to settle its cost."""
    moved = bool(written(
        session, update(Job).where(Job.id == job_id, Job.status == CANCELED,
                                   Job.cost_actual.is_(None))
        .values(provider_state="submitted", provider_request_id=request_id,
                provider_submitted_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False), Job.id))
    if moved:
        add_event(session, job_id, "submitted_after_cancel", request_id=request_id)
    return moved


def settle(session: Session, job_id: str, why: str, charged: Decimal | None) -> None:
    """A canceled job's last call has ended; nothing more will be charged for it."""
    session.execute(update(Job).where(Job.id == job_id)
                    .values(provider_state="settled", updated_at=utcnow())
                    .execution_options(synchronize_session=False))
    add_event(session, job_id, "call_settled", reason=why,
              charged=None if charged is None else str(charged))


def extend_lease(session: Session, job_id: str, lease_seconds: float) -> bool:
    """Renew a running job's lease, or a canceled job's whose call is still settling."""
    return bool(written(
        session, update(Job).where(Job.id == job_id, or_(Job.status == RUNNING, SETTLING))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False), Job.id))


# Ids per statement when renewing many leases: under every database's parameter limit.
_LEASE_CHUNK = 500


def renew_leases(session: Session, job_ids: list[str], lease_seconds: float) -> int:
    """Renew the leases of every job one worker follows: one UPDATE per 500 jobs, not
    one per look. Jobs that have ended since are left alone."""
    until = utcnow() + timedelta(seconds=lease_seconds)
    renewed = 0
    for start in range(0, len(job_ids), _LEASE_CHUNK):
        renewed += len(written(
            session, update(Job).where(Job.id.in_(job_ids[start:start + _LEASE_CHUNK]),
                                       or_(Job.status == RUNNING, SETTLING))
            .values(lease_expires_at=until).execution_options(synchronize_session=False),
            Job.id))
    return renewed


def release_leases(session: Session, job_ids: list[str], grace_seconds: float) -> None:
    """A stopping worker hands its jobs back: their leases are cut to `grace_seconds`,
    time for the worker it hands them to to take them (the reaper's turn comes after,
    should that hand-off be lost), and each timeline says so."""
    until = utcnow() + timedelta(seconds=grace_seconds)
    for start in range(0, len(job_ids), _LEASE_CHUNK):
        chunk = job_ids[start:start + _LEASE_CHUNK]
        session.execute(
            update(Job).where(Job.id.in_(chunk), or_(Job.status == RUNNING, SETTLING))
            .values(lease_expires_at=until).execution_options(synchronize_session=False))
        for job_id in chunk:
            add_event(session, job_id, "handed_back", reason="its worker is stopping")


















