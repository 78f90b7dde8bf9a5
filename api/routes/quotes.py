"""POST /v1/quotes: what a job would cost, and whether it fits, without running anything."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.bodies import EDIT_REQUEST_BODY, read_edit_request
from api.deps import PrincipalDep, ServicesDep, WorkDep
from api.schemas import QuoteOut
from shared.jobs.submission import quote

router = APIRouter(prefix="/v1/quotes", tags=["costs"])


@router.post("", response_model=QuoteOut, openapi_extra=EDIT_REQUEST_BODY)
async def create_quote(request: Request, services: ServicesDep, work: WorkDep,
                       principal: PrincipalDep) -> dict[str, Any]:
    """The same body as POST /v1/jobs, checked the same way; nothing is stored or charged."""
    req = await read_edit_request(request, services.settings)
    return await work(lambda session: quote(session, services, principal, req))
