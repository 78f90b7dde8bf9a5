"""Deletion on request: a job's data, a batch's, or a whole tenant's (an admin's key).

Each deletes the outputs at once and releases the inputs (deleted within the grace
period and a sweep, unless another kept job of the tenant uses them: an image two
tenants sent is two objects, so one tenant's erasure never takes the other's), writes
an event on every job, and answers what it did. Cost history and reports are untouched:
the ledger keeps its rows, the jobs their records.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import utcnow
from shared.errors import NotEnded, NotFound
from shared.formats import iso
from shared.models import Batch, Job, Upload
from shared.retention.sweep import delete_outputs, release_inputs
from shared.statuses import TERMINAL
from shared.storage import Storage

_ENDED = tuple(sorted(TERMINAL))


def erase_jobs(session: Session, settings: Settings, storage: Storage,
               job_ids: list[str]) -> dict[str, Any]:
    now = utcnow()
    outputs, released, kept = 0, 0, 0
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start:start + 500]
        outputs += delete_outputs(session, storage, chunk, now, reason="requested")
        freed, used = release_inputs(session, chunk, now, reason="requested")
        released, kept = released + freed, kept + used
    within = settings.input_release_grace_seconds + settings.retention_sweep_interval_seconds
    return {"jobs": len(job_ids), "outputs_deleted": outputs, "inputs_released": released,
            "inputs_kept_for_other_jobs": kept,
            "inputs_deleted_by": iso(now + timedelta(seconds=within)),
            "data_deleted_at": iso(now)}


def erase_job(session: Session, settings: Settings, storage: Storage, tenant_id: str,
              job_id: str) -> dict[str, Any]:
    status = session.scalar(select(Job.status).where(Job.id == job_id,
                                                     Job.tenant_id == tenant_id))
    if status is None:
        raise NotFound(f"no job {job_id}")
    if status not in _ENDED:
        raise NotEnded(f"job {job_id} is {status}: cancel it, or wait for it to end",
                       status=status)
    return {"job_id": job_id, **erase_jobs(session, settings, storage, [job_id])}


def erase_batch(session: Session, settings: Settings, storage: Storage, tenant_id: str,
                batch_id: str) -> dict[str, Any]:
    batch = session.scalar(select(Batch).where(Batch.id == batch_id,
                                               Batch.tenant_id == tenant_id))
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    if batch.finished_at is None:
        raise NotEnded(f"batch {batch_id} is {batch.status}: cancel it, or wait for it to "
                       "end", status=batch.status)
    ids = list(session.scalars(select(Job.id).where(Job.batch_id == batch_id)))
    files = [k for k in (batch.spec.get("items_key"), batch.manifest_key) if k]
    if files:
        storage.delete(files)
    session.execute(update(Batch).where(Batch.id == batch_id).values(manifest_key=None)
                    .execution_options(synchronize_session=False))
    return {"batch_id": batch_id, "batch_files_deleted": len(files),
            **erase_jobs(session, settings, storage, ids)}


def erase_tenant(session: Session, settings: Settings, storage: Storage,
                 tenant_id: str) -> dict[str, Any]:
    """Everything the tenant stored, but for the jobs not ended yet (said, with their
    count: erase again once they have)."""
    ended = list(session.scalars(select(Job.id).where(Job.tenant_id == tenant_id,
                                                      Job.status.in_(_ENDED))))
    not_ended = session.query(Job).filter(Job.tenant_id == tenant_id,
                                          Job.status.not_in(_ENDED)).count()
    files: list[str] = []
    for batch in session.scalars(select(Batch).where(Batch.tenant_id == tenant_id)):
        files += [k for k in (batch.spec.get("items_key"), batch.manifest_key) if k]
    uploads = list(session.scalars(select(Upload.key).where(Upload.tenant_id == tenant_id)))
    if files or uploads:
        storage.delete(files + uploads)
    session.execute(delete(Upload).where(Upload.tenant_id == tenant_id))
    session.execute(update(Batch).where(Batch.tenant_id == tenant_id).values(manifest_key=None)
                    .execution_options(synchronize_session=False))
    return {"tenant_id": tenant_id, "not_ended": not_ended, "batch_files_deleted": len(files),
            "uploads_deleted": len(uploads),
            **erase_jobs(session, settings, storage, ended)}
