"""Batches: many jobs under one id, from items or from a filter over stored jobs.

Accepting a batch checks everything that can be checked up front (every item
line, or every child of a reprocessing) and admits its whole estimate against
the tenant's limits; the jobs themselves are created later, in the worker, by
shared.batches.expansion. Items wait for it in S3 (a JSONL file of checked items whose
images are already stored, content-addressed); a reprocessing keeps its filter
and override, and each child reuses its parent's stored inputs.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import changes
from shared.batches.checks import BatchInvalid, Checked
from shared.db import utcnow
from shared.errors import InvalidInput, NotFound
from shared.formats import iso, money
from shared.idempotency import replay
from shared.jobs.states import CANCELED, QUEUED, STATUSES, TERMINAL
from shared.models import Batch, Job, JobEvent
from shared.money import budgets
from shared.queue import LOW
from shared.services import Services
from shared.storage import Storage, batch_key
from shared.tenants import Principal
from shared.webhooks.outbox import BATCH_EVENTS, JOB_EVENTS

EXPANDING, RUNNING, COMPLETED = "expanding", "running", "completed"






def _new_id() -> str:
    return "bat_" + uuid.uuid4().hex[:24]










def create(session: Session, services: Services, principal: Principal,
           *, kind: str, checked: Checked, spec: dict[str, Any], skip_invalid: bool,
           webhook_url: str | None, webhook_events: list[str] | None,
           metadata: dict[str, Any], idempotency_key: str | None = None,
           fingerprint: str | None = None) -> tuple[Batch, bool]:
    """Admit the batch's whole estimate and record it; answer (batch, created). The
    caller commits, then enqueues the expansion of a batch it created."""
    settings = services.settings
    if checked.invalid and not skip_invalid:
        raise BatchInvalid(f"{checked.invalid} item(s) are not valid jobs; fix them, or "
                           "send on_error=skip to accept the valid ones",
                           errors=checked.errors, invalid=checked.invalid)
    if not checked.count:
        raise InvalidInput("the batch has no valid item", field="items")
    if checked.count > settings.batch_max_jobs:
        raise InvalidInput(f"a batch makes at most {settings.batch_max_jobs} jobs",
                           field="items")
    if webhook_events is not None and not set(webhook_events) <= set(
            JOB_EVENTS + BATCH_EVENTS):
        raise InvalidInput("webhook_events must be job or batch events", field="webhook_events")
    by_model = checked.by_model
    budgets.admit(session, settings, principal.tenant_id, next(iter(by_model)),
                  checked.estimate, count=checked.count, per_model=by_model)
    batch_id = _new_id()
    items_key = (batch_key(principal.tenant_id, batch_id, "items.jsonl") if kind == "items"
                 else None)
    batch = Batch(id=batch_id, tenant_id=principal.tenant_id, kind=kind, status=EXPANDING,
                  spec={**spec, **({"items_key": items_key} if items_key else {})},
                  total=checked.count, expanded=0, cursor=0,
                  estimated_total=checked.estimate, estimate_pending=checked.estimate,
                  webhook_url=webhook_url, webhook_events=webhook_events, metadata_=metadata,
                  idempotency_key=idempotency_key, request_hash=fingerprint,
                  created_at=utcnow(), updated_at=utcnow())
    try:
        with session.begin_nested():
            session.add(batch)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key made the batch first.
        if idempotency_key and fingerprint and (
                winner := replay(session, Batch, principal.tenant_id, idempotency_key,
                                 fingerprint, what="batch")):
            return winner, False
        raise
    if items_key:  # (the items go to S3 once the batch is sure to be this one)
        services.storage.put(items_key, "\n".join(checked.lines).encode(),
                             "application/x-ndjson")
    return batch, True


def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch:
    batch = session.scalar(select(Batch).where(Batch.id == batch_id,
                                               Batch.tenant_id == tenant_id))
    if batch is None:
        raise NotFound(f"no batch {batch_id}", batch_id=batch_id)
    return batch


def counts(session: Session, batch_id: str) -> tuple[Counter[str], Decimal]:
    rows = session.execute(select(Job.status, func.count(), func.sum(Job.cost_actual))
                           .where(Job.batch_id == batch_id).group_by(Job.status)).all()
    by_status: Counter[str] = Counter({status: n for status, n, _ in rows})
    spent = sum((cost for _, _, cost in rows if cost is not None), Decimal(0))
    return by_status, spent


def batch_view(session: Session, batch: Batch, storage: Storage | None) -> dict[str, Any]:
    """A batch as clients see it. Without storage (a webhook's outbox row) it keeps the
    manifest's key, presigned when the webhook is sent."""
    by_status, spent = counts(session, batch.id)
    done = sum(by_status[s] for s in TERMINAL)
    return {
        "id": batch.id, "kind": batch.kind, "status": batch.status,
        "priority": batch.spec.get("priority", LOW),
        "total": batch.total, "expanded": batch.expanded,
        "counts": {s: by_status.get(s, 0) for s in STATUSES},
        "progress": {"done": done, "total": batch.total,
                     "fraction": round(done / batch.total, 4) if batch.total else 1.0},
        "cost": {"so_far": money(spent), "estimated_total": money(batch.estimated_total),
                 "currency": "USD"},
        "spec": {k: v for k, v in batch.spec.items()
                 if k not in ("items_key", "template", "after")},
        "webhook_url": batch.webhook_url, "webhook_events": batch.webhook_events,
        "metadata": batch.metadata_,
        **({"manifest_key": batch.manifest_key} if storage is None else
           {"manifest_url": (storage.presigned_get_url(batch.manifest_key)
                             if batch.manifest_key else None)}),
        "created_at": iso(batch.created_at), "updated_at": iso(batch.updated_at),
        "expanded_at": iso(batch.expanded_at), "finished_at": iso(batch.finished_at),
    }


def cancel(session: Session, tenant_id: str, batch_id: str) -> Batch:
    """Stop expanding, cancel the jobs still queued; running ones finish."""
    batch = get_batch(session, tenant_id, batch_id)
    if batch.status in (COMPLETED, CANCELED):
        return batch
    now = utcnow()
    session.execute(update(Batch).where(Batch.id == batch_id,
                                        Batch.status.in_((EXPANDING, RUNNING)))
                    .values(status=CANCELED, updated_at=now, estimate_pending=Decimal(0))
                    .execution_options(synchronize_session=False))
    queued = list(session.scalars(select(Job.id).where(Job.batch_id == batch_id,
                                                       Job.status == QUEUED)))
    for start in range(0, len(queued), 1000):
        ids = queued[start:start + 1000]
        moved = session.execute(
            update(Job).where(Job.id.in_(ids), Job.status == QUEUED)
            .values(status=CANCELED, finished_at=now, updated_at=now, lease_expires_at=None,
                    cost_actual=Decimal(0))
            .execution_options(synchronize_session=False)
            .returning(Job.id))
        ended = list(moved.scalars())
        session.add_all(JobEvent(job_id=job_id, type="canceled", from_status=QUEUED,
                                 to_status=CANCELED, detail={"by": "batch"}, at=now)
                        for job_id in ended)
        changes.note(session, *map(changes.job_key, ended))
    changes.note(session, changes.batch_key(batch_id))
    session.refresh(batch)
    return batch


def result_lines(session: Session, batch: Batch, storage: Storage) -> Iterator[str]:
    """One JSON line per job of the batch, in its order: what it became and cost; then
    one per parent a reprocessing skipped, with the reason."""
    after = -1
    while True:
        jobs = list(session.scalars(select(Job).where(Job.batch_id == batch.id,
                                                      Job.batch_index > after)
                                    .order_by(Job.batch_index).limit(500)))
        if not jobs:
            break
        for job in jobs:
            yield json.dumps({
                "id": job.id, "index": job.batch_index, "parent_job_id": job.parent_job_id,
                "status": job.status, "model": job.model,
                "outputs": [storage.presigned_get_url(o["key"]) for o in job.outputs
                            if job.outputs_deleted_at is None],
                "cost": {"estimated": money(job.cost_estimated),
                         "actual": money(job.cost_actual)
                         if job.cost_actual is not None else None},
                "error": ({"code": job.error_code, "message": job.error_message}
                          if job.error_code else None),
            }) + "\n"
        after = jobs[-1].batch_index or 0
    for skipped in batch.spec.get("skipped", []):  # parents a reprocessing could not redo
        yield json.dumps({"id": None, "parent_job_id": skipped["parent_job_id"],
                          "status": "skipped", "reason": skipped["reason"]}) + "\n"
