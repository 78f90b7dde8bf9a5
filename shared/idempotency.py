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

from shared.errors import IdempotencyConflict, InvalidInput

MAX_KEY_CHARS = 255


def checked_key(key: str | None) -> str | None:
    """The Idempotency-Key as given, None when absent; an empty or blank one is refused
    (it would be skipped for the replay, then stored as '' and met the unique index on
    the next request: a 500)."""
    if key is None:
        return None
    if not key.strip():
        raise InvalidInput("Idempotency-Key must not be empty; send a unique value per "
                           "request, or no header", field="Idempotency-Key")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(f"Idempotency-Key is over {MAX_KEY_CHARS} characters",
                           field="Idempotency-Key")
    return key


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
