"""Deleting stored images whose time has come, in bounded batches: beat's retention sweep,
and the deletions a tenant asks for (shared.retention.erase) share these steps.

A job's outputs go once it has ended, its keep time has passed and no webhook of its is
still waiting to be delivered (a delivery links the outputs); its inputs are then
released (shared.retention.uses), and deleted after the grace period if no kept job of
the tenant uses them. The job keeps its record, its events and its ledger rows; it says
when its outputs, its inputs and all its data (`data_deleted_at`) went.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, insert, select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.models import Job, JobEvent, WebhookDelivery
from shared.retention import uses
from shared.retention.policy import FOREVER, deployment
from shared.statuses import TERMINAL
from shared.storage import Storage

_ENDED = tuple(sorted(TERMINAL))


def sweep(settings: Settings, storage: Storage, now: datetime | None = None,
          max_seconds: float = 20.0) -> dict[str, int]:
    """Passes until nothing is due or `max_seconds` have gone (beat's next run goes on):
    each pass due outputs, due inputs, then released inputs past their grace, each step
    at most EDITQ_RETENTION_SWEEP_BATCH jobs (or inputs) per distinct keep time, in one
    transaction."""
    until = time.monotonic() + max_seconds
    total = {"jobs": 0, "outputs_deleted": 0, "inputs_released": 0, "inputs_deleted": 0}
    while True:
        done = _pass(settings, storage, now or utcnow())
        total = {name: total[name] + done[name] for name in total}
        if not any(done.values()) or time.monotonic() > until:
            return total


def _pass(settings: Settings, storage: Storage, now: datetime) -> dict[str, int]:
    limit = settings.retention_sweep_batch
    done = {"jobs": 0, "outputs_deleted": 0, "inputs_released": 0, "inputs_deleted": 0}
    with session_scope(settings.database_url) as session:
        for job_ids in _due(session, settings, "outputs", now, limit):
            done["jobs"] += len(job_ids)
            done["outputs_deleted"] += delete_outputs(session, storage, job_ids, now,
                                                      reason="retention")
    with session_scope(settings.database_url) as session:
        for job_ids in _due(session, settings, "inputs", now, limit):
            done["jobs"] += len(job_ids)
            done["inputs_released"] += release_inputs(session, job_ids, now,
                                                      reason="retention")[0]
    with session_scope(settings.database_url) as session:
        done["inputs_deleted"] = uses.delete_released(
            session, storage, settings.input_release_grace_seconds, now, limit)
    return done


def _due(session: Session, settings: Settings, which: str, now: datetime,
         limit: int) -> list[list[str]]:
    """The ended jobs whose `which` ("inputs" or "outputs") are due, a list per distinct
    keep time (each one indexed query: keep time, then end)."""
    keep = Job.keep_outputs_seconds if which == "outputs" else Job.keep_inputs_seconds
    deleted = Job.outputs_deleted_at if which == "outputs" else Job.inputs_deleted_at
    waiting = deleted.is_(None), Job.finished_at.is_not(None)
    found = []
    for value in list(session.scalars(select(keep).where(*waiting).distinct())):
        seconds = deployment(settings, which) if value is None else value
        if seconds == FOREVER or seconds < 0:
            continue
        held_by_delivery = exists().where(WebhookDelivery.job_id == Job.id,
                                          WebhookDelivery.status == "pending")
        ids = list(session.scalars(
            select(Job.id).where(keep.is_(None) if value is None else keep == value, *waiting,
                                 Job.finished_at <= now - timedelta(seconds=seconds),
                                 Job.status.in_(_ENDED), ~held_by_delivery)
            .order_by(Job.finished_at).limit(limit)))
        if ids:
            found.append(ids)
    return found


def delete_outputs(session: Session, storage: Storage, job_ids: list[str], now: datetime,
                   *, reason: str) -> int:
    """Delete these jobs' outputs (objects first, then the record of them); answers how
    many objects went."""
    jobs = [(job_id, outputs) for job_id, outputs in session.execute(
        select(Job.id, Job.outputs).where(Job.id.in_(job_ids), Job.outputs_deleted_at.is_(None)))]
    keys = [out["key"] for _, outputs in jobs for out in outputs or [] if out.get("key")]
    if keys:
        storage.delete(keys)
    ids = [job_id for job_id, _ in jobs]
    _mark(session, ids, now, outputs_deleted_at=now)
    _events(session, [(job_id, "outputs_deleted", {"reason": reason,
                                                   "objects": len(outputs or [])})
                      for job_id, outputs in jobs], now)
    return len(keys)


def release_inputs(session: Session, job_ids: list[str], now: datetime, *,
                   reason: str) -> tuple[int, int]:
    """These jobs keep their inputs no more; the inputs no other kept job uses are
    released (deleted after the grace period). Answers (released, still used)."""
    ids = list(session.scalars(select(Job.id).where(Job.id.in_(job_ids),
                                                    Job.inputs_deleted_at.is_(None))))
    _mark(session, ids, now, inputs_deleted_at=now)
    released = uses.release(session, ids, now)
    _events(session, [(job_id, "inputs_released", {"reason": reason}) for job_id in ids], now)
    return released


def _mark(session: Session, job_ids: list[str], now: datetime, **values: Any) -> None:
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start:start + 500]
        session.execute(update(Job).where(Job.id.in_(chunk)).values(**values)
                        .execution_options(synchronize_session=False))
        session.execute(update(Job).where(Job.id.in_(chunk), Job.data_deleted_at.is_(None),
                                          Job.inputs_deleted_at.is_not(None),
                                          Job.outputs_deleted_at.is_not(None))
                        .values(data_deleted_at=now)
                        .execution_options(synchronize_session=False))


def _events(session: Session, events: list[tuple[str, str, dict[str, Any]]],
            now: datetime) -> None:
    if events:
        session.execute(insert(JobEvent), [{"job_id": job_id, "type": kind, "detail": detail,
                                            "at": now} for job_id, kind, detail in events])
