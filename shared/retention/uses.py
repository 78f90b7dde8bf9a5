"""Which stored inputs each job uses, and when an input may be deleted.

An input is stored once per tenant (its key is the tenant's and its content's hash), so
jobs of one tenant that sent the same image share it: it may go only when none of them
still keeps its inputs. Deleting it the moment that becomes true would race a
submission that found it stored (and so did not store it again) and has not committed
its job yet; so an input no kept job uses is first *released* (a row with the time),
and deleted by a later sweep once it has stayed released for the grace period and,
checked again, is still unused. A job that took it up in between keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.models import Job, JobInput, ReleasedInput
from shared.storage import Storage


def _insert(session: Session) -> type:
    return (postgresql_insert if session.get_bind().dialect.name == "postgresql"  # type: ignore[return-value]
            else sqlite_insert)


# On every POST: built once, run with parameters (see shared.jobs.states on why Core).
_RECORD = {"postgresql": postgresql_insert(cast(Table, JobInput.__table__))
           .on_conflict_do_nothing(),
           "sqlite": sqlite_insert(cast(Table, JobInput.__table__)).on_conflict_do_nothing()}


def record(session: Session, rows: Iterable[tuple[str, str, str]]) -> None:
    """Record (job_id, tenant_id, key) uses; one already recorded is left as it is."""
    values = [{"job_id": job_id, "tenant_id": tenant_id, "key": key}
              for job_id, tenant_id, key in rows]
    if values:
        connection = session.connection()
        connection.execute(_RECORD["postgresql" if connection.dialect.name == "postgresql"
                                   else "sqlite"], values)


def keys_of(job: Job) -> list[str]:
    return sorted({*(job.input_keys or []), *([job.mask_key] if job.mask_key else [])})


def release(session: Session, job_ids: list[str], now: datetime) -> tuple[int, int]:
    """The inputs of these jobs (whose inputs are no longer kept: the caller has marked
    them) that no other kept job of their tenant uses are released; answers (released,
    still used)."""
    if not job_ids:
        return 0, 0
    used = {(tenant, key) for tenant, key in session.execute(
        select(JobInput.tenant_id, JobInput.key).where(JobInput.job_id.in_(job_ids)))}
    if not used:
        return 0, 0
    kept = _still_used(session, used)
    free = used - kept
    if free:
        session.execute(_insert(session)(ReleasedInput).values(
            [{"tenant_id": t, "key": k, "since": now} for t, k in sorted(free)])
            .on_conflict_do_nothing())
    return len(free), len(kept)


def _still_used(session: Session, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of these (tenant_id, key), the ones a job whose inputs are kept uses."""
    found: set[tuple[str, str]] = set()
    ordered = sorted(pairs)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        keys = [key for _, key in chunk]
        rows = {(tenant, key) for tenant, key in session.execute(
            select(JobInput.tenant_id, JobInput.key)
            .join(Job, Job.id == JobInput.job_id)
            .where(JobInput.key.in_(keys), Job.inputs_deleted_at.is_(None)).distinct())}
        found |= rows & set(chunk)
    return found


def delete_released(session: Session, storage: Storage, grace_seconds: float,
                    now: datetime, limit: int) -> int:
    """Delete the inputs released at least `grace_seconds` ago that still no kept job
    uses (those taken up again are kept); answers how many objects went."""
    due = {(tenant, key) for tenant, key in session.execute(
        select(ReleasedInput.tenant_id, ReleasedInput.key)
        .where(ReleasedInput.since <= now - timedelta(seconds=grace_seconds))
        .order_by(ReleasedInput.since).limit(limit))}
    if not due:
        return 0
    gone = sorted(due - _still_used(session, due))
    if gone:
        storage.delete([key for _, key in gone])
    for tenant_id, key in due:
        session.execute(delete(ReleasedInput).where(ReleasedInput.tenant_id == tenant_id,
                                                    ReleasedInput.key == key))
    return len(gone)
