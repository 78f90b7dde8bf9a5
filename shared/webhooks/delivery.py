"""Sending the outbox: signed POSTs, retried on a schedule kept in the database.

A periodic task (beat, every EDITQ_WEBHOOK_DISPATCH_SECONDS) takes the due
deliveries, each by a conditional UPDATE that moves its next attempt a minute
ahead (a lease: if the worker dies mid-send the delivery comes due again), and
hands each to a short task that sends it once. Nothing waits in the broker for
hours; a retry is a row whose `next_attempt_at` has come.

Every attempt re-checks the URL against SSRF (DNS may have changed since
submit) and connects to the address it checked, never to a fresh lookup.
A 2xx is delivered; 410 Gone stops every pending delivery to that URL; 429
and 503 honour Retry-After; anything else is retried after the next delay of
the schedule (with +-10% jitter) until the schedule is used up.
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from shared.address_guard import UnsafeWebhookUrl, check_webhook_url, pinned_request
from shared.config import Settings
from shared.db import session_scope, utcnow, written
from shared.errors import EditqError
from shared.job_shape import presign_outputs
from shared.models import WebhookAttempt, WebhookDelivery
from shared.providers.classify import parse_retry_after
from shared.storage import Storage
from shared.webhooks.outbox import DELIVERED, FAILED, GONE, PENDING, secret_ring
from shared.webhooks.signing import webhook_headers

log = logging.getLogger(__name__)

LEASE_SECONDS = 60


def take_due(settings: Settings, limit: int = 200) -> list[str]:
    """Claim the deliveries whose time has come; answer their ids."""
    now = utcnow()
    with session_scope(settings.database_url) as session:
        due = list(session.scalars(
            select(WebhookDelivery.id).where(WebhookDelivery.status == PENDING,
                                             WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)))
    taken = []
    for delivery_id in due:
        with session_scope(settings.database_url) as session:
            if written(session, update(WebhookDelivery)
                       .where(WebhookDelivery.id == delivery_id,
                              WebhookDelivery.status == PENDING,
                              WebhookDelivery.next_attempt_at <= now)
                       .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS))
                       .execution_options(synchronize_session=False), WebhookDelivery.id):
                taken.append(delivery_id)
    return taken


def body_of(delivery: WebhookDelivery, storage: Storage) -> bytes:
    """{type, timestamp, data}: data is the job as GET shows it, its links fresh."""
    payload = dict(delivery.payload)
    data = payload.get("data") or {}
    if "outputs" in data:
        payload["data"] = presign_outputs(data, storage)
    if "manifest_key" in data:
        key = data["manifest_key"]
        payload["data"] = {**{k: v for k, v in data.items() if k != "manifest_key"},
                           "manifest_url": storage.presigned_get_url(key) if key else None}
    return json.dumps(payload, separators=(",", ":")).encode()


def deliver(delivery_id: str, settings: Settings, storage: Storage,
            http: httpx.Client) -> str:
    """One attempt at one delivery; answer its status afterwards."""
    with session_scope(settings.database_url) as session:
        delivery = session.scalar(select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id))
        if delivery is None or delivery.status != PENDING:
            return "skipped"
        secrets = secret_ring(session, delivery.tenant_id).signing_secrets(utcnow())
    started = time.monotonic()
    status_code: int | None = None
    retry_after: float | None = None
    error: str | None = None
    try:
        addresses = check_webhook_url(delivery.url, settings.webhook_allowed_host_set)
        body = body_of(delivery, storage)
        headers = webhook_headers(secrets, delivery.msg_id, body)
        url, extensions = delivery.url, {}
        if addresses:
            url, host_header, pinned = pinned_request(delivery.url, addresses[0])
            headers.update(host_header)
            extensions = dict(pinned)
        response = http.post(url, content=body, headers=headers, extensions=extensions,
                             timeout=settings.webhook_timeout_seconds, follow_redirects=False)
        status_code = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except UnsafeWebhookUrl as exc:
        error = exc.message
        if exc.extra.get("reason") != "unresolvable":  # DNS may come back; a refusal won't
            return _record(settings, delivery, None, error, started, final=FAILED)
    except EditqError as exc:  # storage, while presigning the output links: try later
        error = exc.message
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: could not deliver"
    if status_code is not None and 200 <= status_code < 300:
        return _record(settings, delivery, status_code, None, started, final=DELIVERED)
    if status_code == 410:
        return _record(settings, delivery, status_code, error, started, final=GONE)
    return _record(settings, delivery, status_code, error, started, final=None,
                   retry_after=retry_after if status_code in (429, 503) else None)


def _record(settings: Settings, delivery: WebhookDelivery, status_code: int | None,
            error: str | None, started: float, *, final: str | None,
            retry_after: float | None = None) -> str:
    latency_ms = int((time.monotonic() - started) * 1000)
    now = utcnow()
    attempts = delivery.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "last_status_code": status_code,
                                 "last_error": error}
    if final is None:
        schedule = settings.webhook_retry_delays
        if attempts > len(schedule):
            final = FAILED
        else:
            delay = schedule[attempts - 1] * random.uniform(0.9, 1.1)
            values["next_attempt_at"] = now + timedelta(seconds=max(delay, retry_after or 0))
    if final is not None:
        values["status"] = final
        values["next_attempt_at"] = None
        if final == DELIVERED:
            values["delivered_at"] = now
    with session_scope(settings.database_url) as session:
        session.add(WebhookAttempt(delivery_id=delivery.id, at=now, status_code=status_code,
                                   error=error, latency_ms=latency_ms))
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id)
                        .values(**values).execution_options(synchronize_session=False))
        if final == GONE:
            # The receiver says the URL is gone: stop everything pending to it.
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.tenant_id == delivery.tenant_id,
                WebhookDelivery.url == delivery.url, WebhookDelivery.status == PENDING)
                .values(status=GONE, next_attempt_at=None,
                        last_error="the URL answered 410 Gone to another delivery")
                .execution_options(synchronize_session=False))
    if final in (FAILED, GONE):
        log.warning("webhook %s to %s: %s after %d attempt(s)", delivery.id,
                    delivery.url.split("?")[0], final, attempts)
    return final or PENDING
