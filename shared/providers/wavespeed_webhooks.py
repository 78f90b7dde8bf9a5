"""Verifying WaveSpeed's webhooks: `webhook-signature: v3,<hex>`.

The HMAC-SHA256 is over "{id}.{timestamp}.{raw body}", keyed with the account
secret minus its `whsec_` prefix, used as text (not base64-decoded, unlike
Standard Webhooks). Old timestamps are refused so a captured call cannot be
replayed later.

`check` and `request_id` are what the provider registry's WaveSpeed entry hands to the
API's generic `/v1/providers/{provider}/webhook` route.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping

from shared.errors import EditqError, InvalidInput
from shared.providers.base import ImageEditProvider
from shared.providers.wavespeed import WaveSpeedEditProvider

MAX_AGE_SECONDS = 300


class WebhookRejected(EditqError):
    code = "webhook_signature_invalid"
    status = 401
    title = "Webhook signature not valid"


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    key = secret.removeprefix("whsec_").encode()
    payload = f"{webhook_id}.{timestamp}.".encode() + body
    return "v3," + hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes,
           now: float | None = None) -> None:
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    if not (webhook_id and timestamp and signature):
        raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        age = (now if now is not None else time.time()) - int(timestamp)
    except ValueError as exc:
        raise WebhookRejected("webhook-timestamp is not a unix time") from exc
    if abs(age) > MAX_AGE_SECONDS:
        raise WebhookRejected(f"webhook-timestamp is {age:.0f} s away from now")
    expected = sign(secret, webhook_id, timestamp, body)
    # Several signatures may be sent, space-separated, during a secret rotation.
    if not any(hmac.compare_digest(expected, given) for given in signature.split()):
        raise WebhookRejected("no signature matches")


def check(provider: ImageEditProvider, headers: Mapping[str, str], body: bytes) -> None:
    """Verify a callback with the account's secret. Blocking: the first call of a process
    asks WaveSpeed for the secret."""
    if not isinstance(provider, WaveSpeedEditProvider):
        raise TypeError(f"WaveSpeed webhooks need the WaveSpeed provider, not {provider!r}")
    verify(provider.client.webhook_secret(), headers, body)


def request_id(body: bytes) -> str:
    """The task the callback is about (its `id`, the request id saved at submit)."""
    try:
        return str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise InvalidInput("webhook body has no task id") from exc
