"""Tenants and their API keys. A key is shown once; only its SHA-256 is stored.

Keys are 256 random bits, so a plain SHA-256 (no salt, no slow hash) is
enough to make a stolen table useless, and it lets lookups use an index.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.errors import Unauthorized
from shared.models import ApiKey, Tenant

KEY_PREFIX = "eq_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: every query is scoped to `tenant_id`."""

    tenant_id: str
    tenant_name: str
    is_admin: bool


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=uuid.uuid4().hex, name=name)
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


def authenticate(session: Session, key: str | None) -> Principal:
    if not key:
        raise Unauthorized("send Authorization: Bearer <api key>")
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized("the API key is not valid")
    api_key, tenant = row
    return Principal(tenant_id=tenant.id, tenant_name=tenant.name, is_admin=api_key.is_admin)
