"""Callbacks from providers. They carry no API key: the signature is the authentication."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep, WakeDep, WorkDep
from shared.errors import InvalidInput
from shared.jobs.lookup import find_by_request
from shared.providers.wavespeed import WaveSpeedEditProvider
from shared.providers.wavespeed_webhooks import verify

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/providers", tags=["providers"])


@router.post("/wavespeed/webhook", include_in_schema=False)
async def wavespeed_webhook(request: Request, services: ServicesDep, work: WorkDep,
                            wakeups: WakeDep) -> dict[str, Any]:
    """A verified callback only says "look now": it wakes the job in the worker that
    follows it, which looks and finishes as it would have on its own schedule, so the
    webhook and polling paths share every step after it."""
    body = await request.body()
    provider = services.provider("wavespeed")
    assert isinstance(provider, WaveSpeedEditProvider)
    secret = await run_in_threadpool(provider.client.webhook_secret)
    verify(secret, request.headers, body)
    try:
        request_id = str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidInput("webhook body has no task id") from exc

    job_id = await work(lambda session: find_by_request(session, "wavespeed", request_id))
    if job_id is None:
        log.info("wavespeed webhook for unknown task %s", request_id)
        return {"status": "ignored"}
    await run_in_threadpool(wakeups.wake, job_id)
    return {"status": "accepted", "job_id": job_id}
