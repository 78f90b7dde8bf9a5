"""Webhooks to users: subscriptions, the outbox, the delivery log and the signing secrets.

An event is recorded as an outbox row in the same transaction as the job
transition it reports (shared.jobs calls `record_job_event`), so an event is
never lost and never invented: if the transition rolls back, so does the row.
(job, event type) is unique, so a transition repeated by a redelivered message
cannot send the same event twice. Sending is shared.webhooks.delivery's work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import utcnow
from shared.errors import InvalidInput, NotFound
from shared.formats import iso
from shared.job_shape import job_snapshot
from shared.models import Job, Tenant, WebhookAttempt, WebhookDelivery
from shared.webhooks.signing import SecretRing, new_secret

JOB_EVENTS = ("job.started", "job.succeeded", "job.failed", "job.canceled")
BATCH_EVENTS = ("batch.completed",)
DEFAULT_JOB_EVENTS = ("job.succeeded", "job.failed", "job.canceled")
PENDING, DELIVERED, FAILED, GONE = "pending", "delivered", "failed", "gone"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED, GONE)


def check_events(events: list[str] | None) -> list[str] | None:
    """A subscription names known events, at least one; None means the default."""
    if events is None:
        return None
    unknown = sorted(set(events) - set(JOB_EVENTS))
    if unknown or not events:
        raise InvalidInput(f"webhook_events must be some of {', '.join(JOB_EVENTS)}"
                           + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                           field="webhook_events")
    return sorted(set(events), key=JOB_EVENTS.index)


def wants_event(job: Job, tenant_url: str | None, event_type: str) -> bool:
    """Whether the job (or its tenant) subscribes to this event: most jobs have no
    webhook at all, and their transitions write no outbox row and read nothing more."""
    events = job.webhook_events if job.webhook_events is not None else DEFAULT_JOB_EVENTS
    return bool(job.webhook_url or tenant_url) and event_type in events


def record_job_event(session: Session, job_id: str, event_type: str) -> WebhookDelivery | None:
    """Write the outbox row for this event if the job (or its tenant) subscribes to it."""
    row = session.execute(select(Job, Tenant.webhook_url)
                          .join(Tenant, Tenant.id == Job.tenant_id)
                          .where(Job.id == job_id)
                          .execution_options(populate_existing=True)).first()
    if row is None:
        return None
    job, tenant_url = row
    url = job.webhook_url or tenant_url
    # None: the default events; a list (possibly empty, a batch's jobs) is exactly those.
    events = job.webhook_events if job.webhook_events is not None else DEFAULT_JOB_EVENTS
    if not url or event_type not in events:
        return None
    delivery = WebhookDelivery(
        id="whd_" + uuid.uuid4().hex[:24], msg_id="msg_" + uuid.uuid4().hex,
        tenant_id=job.tenant_id, job_id=job.id, event_type=event_type, url=url,
        payload={"type": event_type, "timestamp": iso(utcnow()), "data": None},
        status=PENDING, attempts=0, next_attempt_at=utcnow())
    try:
        with session.begin_nested():
            session.add(delivery)
            session.flush()
    except IntegrityError:
        return None  # this event of this job is in the outbox already
    _picture_at_commit(session, delivery)
    return delivery


# The job is pictured as the transaction leaves it, not as it was at the transition:
# a success is charged after it is recorded, in the same transaction. The hooks are
# this session's only (not every Session's), set by its first delivery.
_SNAPSHOTS = "editq_webhook_snapshots"
_HOOKED = "editq_webhook_hooked"


def _picture_at_commit(session: Session, delivery: WebhookDelivery) -> None:
    if not session.info.get(_HOOKED):
        event.listen(session, "before_commit", _picture_jobs_at_commit)
        event.listen(session, "after_rollback", _forget_snapshots)
        session.info[_HOOKED] = True
    session.info.setdefault(_SNAPSHOTS, []).append(delivery)


def _picture_jobs_at_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint (the ledger's, say): the transaction is not over yet
    for delivery in session.info.pop(_SNAPSHOTS, []):
        job = session.scalar(select(Job).where(Job.id == delivery.job_id)
                             .execution_options(populate_existing=True))
        if job is not None:
            delivery.payload = {**delivery.payload, "data": job_snapshot(job)}


def _forget_snapshots(session: Session) -> None:
    session.info.pop(_SNAPSHOTS, None)


# --- secrets -------------------------------------------------------------------------


def secret_ring(session: Session, tenant_id: str) -> SecretRing:
    """The tenant's signing secrets; a tenant from before webhooks gets one now."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id}")
    if tenant.webhook_secret is None:
        tenant.webhook_secret = new_secret()
        session.flush()
    return SecretRing(tenant.webhook_secret, tenant.webhook_secret_previous,
                      tenant.webhook_secret_previous_until)


def rotate_secret(session: Session, settings: Settings, tenant_id: str) -> SecretRing:
    """A new secret; the old one keeps signing (both signatures are sent) for the overlap."""
    ring = secret_ring(session, tenant_id).rotated(
        utcnow(), timedelta(seconds=settings.webhook_secret_overlap_seconds))
    session.execute(update(Tenant).where(Tenant.id == tenant_id).values(
        webhook_secret=ring.current, webhook_secret_previous=ring.previous,
        webhook_secret_previous_until=ring.previous_until))
    return ring


def secret_view(ring: SecretRing, now: datetime) -> dict[str, Any]:
    overlapping = ring.previous is not None and ring.previous_until is not None and (
        now < ring.previous_until)
    return {"secret": ring.current,
            "previous_valid_until": iso(ring.previous_until) if overlapping else None}


# --- the delivery log ----------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryFilter:
    status: str | None = None
    job_id: str | None = None


def list_deliveries(session: Session, tenant_id: str, filters: DeliveryFilter, *,
                    limit: int, before_seq: int | None = None
                    ) -> tuple[list[WebhookDelivery], dict[str, list[WebhookAttempt]]]:
    """Newest first, with each delivery's attempts oldest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if filters.status:
        query = query.where(WebhookDelivery.status == filters.status)
    if filters.job_id:
        query = query.where(WebhookDelivery.job_id == filters.job_id)
    if before_seq is not None:
        query = query.where(WebhookDelivery.seq < before_seq)
    rows = list(session.scalars(query.order_by(WebhookDelivery.seq.desc()).limit(limit)))
    attempts: dict[str, list[WebhookAttempt]] = {row.id: [] for row in rows}
    if rows:
        for attempt in session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.id)):
            attempts[attempt.delivery_id].append(attempt)
    return rows, attempts


def attempts_of(session: Session, delivery_id: str) -> list[WebhookAttempt]:
    return list(session.scalars(select(WebhookAttempt).where(
        WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)))


def delivery_view(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": delivery.id, "webhook_id": delivery.msg_id, "job_id": delivery.job_id,
        "event_type": delivery.event_type, "url": delivery.url, "status": delivery.status,
        "attempts": [{"at": iso(a.at), "status_code": a.status_code, "error": a.error,
                      "latency_ms": a.latency_ms} for a in attempts],
        "next_attempt_at": (iso(delivery.next_attempt_at)
                            if delivery.status == PENDING else None),
        "created_at": iso(delivery.created_at),
        "delivered_at": iso(delivery.delivered_at),
    }


def redeliver(session: Session, tenant_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, with the same webhook-id (receivers may deduplicate)."""
    delivery = session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.tenant_id == tenant_id))
    if delivery is None:
        raise NotFound(f"no webhook delivery {delivery_id}", delivery_id=delivery_id)
    delivery.status = PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    session.flush()
    return delivery
