"""Callbacks from providers. They carry no API key: the signature is the authentication.

One route serves every provider that calls back: how a provider's callback is verified
and which request it is about are its registry entry's `webhooks`
(shared.providers.registry), so a new provider's webhooks need no route of their own.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from api.deps import ServicesDep, WakeDep, WorkDep
from shared.errors import NotFound
from shared.jobs.lookup import find_by_request

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/providers", tags=["providers"])


@router.post("/{provider}/webhook", include_in_schema=False)
async def provider_webhook(provider: str, request: Request, services: ServicesDep,
                           work: WorkDep, wakeups: WakeDep) -> dict[str, Any]:
    """A verified callback only says "look now": it wakes the job in the worker that
    follows it, which looks and finishes as it would have on its own schedule, so the
    webhook and polling paths share every step after it."""
    entry = services.registry.find(provider)
    if entry is None or entry.webhooks is None:
        raise NotFound(f"no provider {provider!r} calls webhooks here", provider=provider)
    hooks = entry.webhooks
    body = await request.body()
    client = services.provider(provider)
    # Verifying may block (the first call asks the provider for its signing secret).
    await run_in_threadpool(hooks.verify, client, request.headers, body)
    request_id = hooks.request_id(body)

    job_id = await work(lambda session: find_by_request(session, provider, request_id))
    if job_id is None:
        log.info("%s webhook for unknown request %s", provider, request_id)
        return {"status": "ignored"}
    await run_in_threadpool(wakeups.wake, job_id)
    return {"status": "accepted", "job_id": job_id}
