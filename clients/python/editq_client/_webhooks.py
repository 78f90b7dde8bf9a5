"""Verifying editq's webhooks: Standard Webhooks (https://www.standardwebhooks.com/), as
editq signs them (shared/webhooks/signing.py).

Each delivery carries `webhook-id`, `webhook-timestamp` (unix seconds of this attempt)
and `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` entries over
`{webhook-id}.{webhook-timestamp}.{body}`, one per secret currently valid (two during a
rotation's overlap). The HMAC key is the base64-decoded part of the `whsec_` secret.
A few lines of the standard library, so the client needs no other package for it; they
agree with the reference implementation (`standardwebhooks`), which the tests check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ._errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise WebhookVerificationError("the secret is not base64 after whsec_") from exc
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, payload: bytes) -> str:
    """One `v1,<base64>` signature (for tests and for re-signing a stored delivery)."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + payload, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def verify_webhook(payload: bytes, headers: Mapping[str, str], secret: str, *,
                   tolerance: int = TOLERANCE_SECONDS, now: float | None = None) -> Any:
    """Check a webhook delivery and return its parsed JSON body (`{type, timestamp, data}`).

    `payload` is the body exactly as received (bytes: re-serialised JSON would not
    verify); `headers` the request's headers (any case); `secret` the tenant's `whsec_...`
    (GET /v1/webhook-secret). Raises WebhookVerificationError for a missing header, a
    timestamp more than `tolerance` seconds away from now (either way), or no `v1`
    signature that matches."""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp_text and signatures):
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(timestamp_text)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("the webhook's timestamp is too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("the webhook's timestamp is too new")
    if isinstance(payload, str):
        payload = payload.encode()
    expected = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + bytes(payload),
                        hashlib.sha256).digest()
    for entry in signatures.split():
        version, sep, encoded = entry.partition(",")
        if not sep or version != "v1":
            continue  # another scheme (v1a, ...): not ours to judge
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, candidate):
            try:
                return json.loads(payload)
            except ValueError as exc:
                raise WebhookVerificationError("the body is not JSON") from exc
    raise WebhookVerificationError("no webhook signature matches the secret")
