"""Webhooks: the tenant's signing secret (and its rotation), the delivery log, redelivery."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.deps import CursorQuery, PrincipalDep, SettingsDep, WorkDep
from api.schemas import DeliveryList, DeliveryOut, SecretOut
from shared.db import utcnow
from shared.formats import decode_cursor, encode_cursor
from shared.webhooks import outbox

router = APIRouter(tags=["webhooks"])

DeliveryStatus = Literal["pending", "delivered", "failed", "gone"]


@router.get("/v1/webhook-secret", response_model=SecretOut)
def get_secret(work: WorkDep, principal: PrincipalDep) -> dict[str, Any]:
    """The secret that signs this tenant's webhooks (`whsec_...`, Standard Webhooks)."""
    ring = work.now(lambda session: outbox.secret_ring(session, principal.tenant_id))
    return outbox.secret_view(ring, utcnow())


@router.post("/v1/webhook-secret/rotate", response_model=SecretOut)
def rotate_secret(settings: SettingsDep, work: WorkDep,
                  principal: PrincipalDep) -> dict[str, Any]:
    """A new secret. The previous one keeps signing too (two signatures are sent) until
    `previous_valid_until`, so receivers can switch without missing a delivery."""
    ring = work.now(lambda session: outbox.rotate_secret(session, settings,
                                                           principal.tenant_id))
    return outbox.secret_view(ring, utcnow())


@router.get("/v1/webhook-deliveries", response_model=DeliveryList)
def list_deliveries(work: WorkDep, principal: PrincipalDep,
                    status: DeliveryStatus | None = None, job_id: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50,
                    cursor: CursorQuery = None) -> dict[str, Any]:
    """Newest first, each with its attempts: time, status code, error, latency."""
    def read(session: Session) -> dict[str, Any]:
        rows, attempts = outbox.list_deliveries(
            session, principal.tenant_id, outbox.DeliveryFilter(status, job_id),
            limit=limit + 1, before_seq=decode_cursor(cursor) if cursor else None)
        page = rows[:limit]
        return {"data": [outbox.delivery_view(d, attempts[d.id]) for d in page],
                "next_cursor": encode_cursor(page[-1].seq) if len(rows) > limit else None}

    return work.now(read)


@router.post("/v1/webhook-deliveries/{delivery_id}/redeliver", status_code=202,
             response_model=DeliveryOut)
def redeliver(delivery_id: str, work: WorkDep, principal: PrincipalDep) -> dict[str, Any]:
    """Send it again now (same `webhook-id`), whatever became of it before."""
    def send(session: Session) -> dict[str, Any]:
        delivery = outbox.redeliver(session, principal.tenant_id, delivery_id)
        return outbox.delivery_view(delivery, outbox.attempts_of(session, delivery_id))

    return work.now(send)
