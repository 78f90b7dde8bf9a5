"""Tenants and their API keys. A key is shown once; only its SHA-256 is stored.

Keys are 256 random bits, so a plain SHA-256 (no salt, no slow hash) is
enough to make a stolen table useless, and it lets lookups use an index.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from shared.db import MONEY_PLACES, utcnow
from shared.errors import InvalidInput, Unauthorized
from shared.models import ApiKey, ModelBudget, Tenant
from shared.webhook_secrets import new_secret

KEY_PREFIX = "eq_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: every query is scoped to `tenant_id`."""

    tenant_id: str
    tenant_name: str
    is_admin: bool
    key_id: str | None = None
    key_last_used: datetime | None = None
    # The tenant's own retention, in place of the deployment's (shared.retention.policy).
    keep_inputs_seconds: int | None = None
    keep_outputs_seconds: int | None = None


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=uuid.uuid4().hex, name=name, webhook_secret=new_secret())
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, tenant_name: str, *, admin: bool = False) -> str:
    """Create the tenant if needed and answer a new key, in clear, for showing once."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(id=uuid.uuid4().hex, tenant_id=tenant.id, key_hash=hash_key(key),
                       prefix=key[:10], is_admin=admin))
    session.flush()
    return key


# Every request asks this: one Core statement, built once (through the ORM, with two
# entities built per row, it was 8% of the API's CPU per POST: bench/README.md, issue 28).
_BY_KEY = (select(ApiKey.id, ApiKey.tenant_id, ApiKey.is_admin, ApiKey.last_used_at,
                  Tenant.name, Tenant.keep_inputs_seconds, Tenant.keep_outputs_seconds)
           .join(Tenant, Tenant.id == ApiKey.tenant_id)
           .where(ApiKey.key_hash == bindparam("p_hash"), ApiKey.revoked_at.is_(None)))


def authenticate(session: Session, key: str | None) -> Principal:
    if not key:
        raise Unauthorized("send Authorization: Bearer <api key>")
    row = session.connection().execute(_BY_KEY, {"p_hash": hash_key(key)}).first()
    if row is None:
        raise Unauthorized("the API key is not valid")
    return Principal(tenant_id=row.tenant_id, tenant_name=row.name, is_admin=row.is_admin,
                     key_id=row.id, key_last_used=row.last_used_at,
                     keep_inputs_seconds=row.keep_inputs_seconds,
                     keep_outputs_seconds=row.keep_outputs_seconds)


def note_use(session: Session, principal: Principal) -> bool:
    """Record that the key was used now, at most once a minute per key (the read in
    `authenticate` already tells whether it is due, so most requests write nothing).
    Answers whether it wrote; the caller commits."""
    now = utcnow()
    last = principal.key_last_used
    if principal.key_id is None or (last is not None and now - last < LAST_USED_RESOLUTION):
        return False
    session.execute(update(ApiKey).where(ApiKey.id == principal.key_id)
                    .values(last_used_at=now).execution_options(synchronize_session=False))
    return True


def parse_usd(text: str, what: str = "an amount") -> Decimal:
    """A budget as typed by a person: plain decimal USD, >= 0, at most 6 decimal places."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise InvalidInput(f"{what} must be a decimal amount of USD, not {text!r}") from exc
    if not value.is_finite() or value < 0 or value != value.quantize(
            Decimal(1).scaleb(-MONEY_PLACES)):
        raise InvalidInput(f"{what} must be >= 0 with at most {MONEY_PLACES} decimals, "
                           f"not {text!r}")
    return value


def set_limits(session: Session, tenant: Tenant, *, monthly_budget: Decimal | None = None,
               clear_budget: bool = False,
               model_budgets: Mapping[str, Decimal | None] | None = None,
               plan: str | None = None) -> None:
    """Change what a tenant may spend or submit; whatever is not given stays as it was (a
    model's budget of None removes it)."""
    if clear_budget:
        tenant.monthly_budget = None
    elif monthly_budget is not None:
        tenant.monthly_budget = monthly_budget
    if plan is not None:
        tenant.plan = plan
    for model, budget in (model_budgets or {}).items():
        session.execute(delete(ModelBudget).where(ModelBudget.tenant_id == tenant.id,
                                                  ModelBudget.model == model))
        if budget is not None:
            session.add(ModelBudget(tenant_id=tenant.id, model=model, monthly_budget=budget))
    session.flush()
