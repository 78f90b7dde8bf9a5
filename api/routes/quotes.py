"""POST /v1/quotes: what a job would cost, and whether it fits, without running anything."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.bodies import EDIT_REQUEST_BODY, read_edit_request
from api.deps import PrincipalDep, SettingsDep
from api.schemas import QuoteOut
from shared.db import session_scope
from shared.submission import quote

router = APIRouter(prefix="/v1/quotes", tags=["costs"])


@router.post("", response_model=QuoteOut, openapi_extra=EDIT_REQUEST_BODY)
async def create_quote(request: Request, settings: SettingsDep,
                       principal: PrincipalDep) -> dict[str, Any]:
    """The same body as POST /v1/jobs, checked the same way; nothing is stored or charged."""
    req = await read_edit_request(request, settings)

    def price() -> dict[str, Any]:
        with session_scope(settings.database_url) as session:
            return quote(session, settings, principal, req)

    return await run_in_threadpool(price)
