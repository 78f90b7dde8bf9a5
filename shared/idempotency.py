"""Idempotency-Key: the same key with the same request answers what the first request
made; the same key with another request is refused.

One rule for jobs, batches and comparisons: each row keeps the key and a
fingerprint of the request that made it (unique per tenant and key in the
schema, so two concurrent first requests cannot both insert).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.errors import IdempotencyConflict


class Keyed(Protocol):
    id: Any
    request_hash: Any


T = TypeVar("T", bound=Keyed)


def replay(session: Session, model: type[T], tenant_id: str, key: str, fingerprint: str,
           *, what: str) -> T | None:
    """The `model` row (a job, a batch, a comparison: `what`) an earlier request with this
    key made, or None; IdempotencyConflict when that request was another one."""
    table: Any = model  # (a mapped class: its columns are not in the protocol)
    found: T | None = session.scalar(select(table).where(
        table.tenant_id == tenant_id, table.idempotency_key == key))
    if found is not None and found.request_hash != fingerprint:
        raise IdempotencyConflict(
            f"this Idempotency-Key was used for a different {what}; use a new key",
            **{f"{what}_id": found.id})
    return found
