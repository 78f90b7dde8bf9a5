"""/v1/tenants/{tenant}/data: a whole tenant's stored images erased, by an admin key (a
right-to-erasure request); its records, events and costs stay."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import or_, select

from api.deps import PrincipalDep, ServicesDep, WorkDep
from api.schemas import DataErased
from shared.errors import Forbidden, NotFound
from shared.models import Tenant
from shared.retention import erase

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.delete("/{tenant}/data", response_model=DataErased)
def erase_tenant(tenant: str, work: WorkDep, services: ServicesDep,
                 principal: PrincipalDep) -> dict[str, Any]:
    """Every stored image of the tenant (named by id or by name): outputs at once, inputs
    within minutes, uploads and batch files at once. Jobs not ended yet keep theirs and
    are counted (`not_ended`): erase again once they have."""
    if not principal.is_admin:
        raise Forbidden("erasing a tenant's data needs an admin key")

    def run(session: Any) -> dict[str, Any]:
        tenant_id = session.scalar(select(Tenant.id).where(
            or_(Tenant.id == tenant, Tenant.name == tenant)))
        if tenant_id is None:
            raise NotFound(f"no tenant {tenant}")
        return erase.erase_tenant(session, services.settings, services.storage, tenant_id)

    return work.now(run)
