"""Callbacks from providers. They carry no API key: the signature is the authentication."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, WakeDep
from shared.config import Settings
from shared.db import session_scope
from shared.errors import InvalidInput
from shared.models import Job
from shared.providers.router import get_provider
from shared.providers.wavespeed import WaveSpeedEditProvider
from shared.providers.wavespeed_webhooks import verify

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/providers", tags=["providers"])


@lru_cache(maxsize=4)
def _wavespeed_secret(settings: Settings) -> str:
    provider = get_provider("wavespeed", settings)
    assert isinstance(provider, WaveSpeedEditProvider)
    return provider.client.webhook_secret()


@router.post("/wavespeed/webhook", include_in_schema=False)
async def wavespeed_webhook(request: Request, settings: SettingsDep,
                            wakeups: WakeDep) -> dict[str, Any]:
    """A verified callback only says "look now": it wakes the job in the worker that
    follows it, which looks and finishes as it would have on its own schedule, so the
    webhook and polling paths share every step after it."""
    body = await request.body()
    secret = await run_in_threadpool(_wavespeed_secret, settings)
    verify(secret, request.headers, body)
    try:
        request_id = str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("webhook body has no task id") from exc

    def find() -> tuple[str, str] | None:
        with session_scope(settings.database_url) as session:
            row = session.execute(
                select(Job.id, Job.queue).where(Job.provider == "wavespeed",
                                                Job.provider_request_id == request_id)).first()
            return (row[0], row[1]) if row else None

    found = await run_in_threadpool(find)
    if found is None:
        log.info("wavespeed webhook for unknown task %s", request_id)
        return {"status": "ignored"}
    await run_in_threadpool(wakeups.wake, found[0])
    return {"status": "accepted", "job_id": found[0]}
