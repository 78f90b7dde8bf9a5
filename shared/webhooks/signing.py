"""Standard Webhooks signing (https://www.standardwebhooks.com/) for outgoing webhooks.

Each delivery carries three headers:

- `webhook-id`: the message id. It stays the same across retries so that the receiver
  can deduplicate, and it is signed so that a replayed body cannot pass for another
  message.
- `webhook-timestamp`: unix seconds when this attempt was signed. It is signed so that
  the receiver can refuse old captures (replay protection) within a tolerance.
- `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` entries over
  `f"{msg_id}.{timestamp}.{body}"`, one entry per secret that is currently valid.
  Several entries let a tenant rotate its secret without dropping deliveries: during
  the overlap window the receiver may still hold the previous secret, or already the
  new one, and either verifies.

Secrets are `whsec_` + base64 of random bytes (made by shared.webhook_secrets, whose
`new_secret` is re-exported here: tenants, a basic module, makes one too); the HMAC key is
the decoded bytes, not the text. The body is signed as the exact raw bytes sent:
re-serialising JSON on either side would change the bytes and break the signature.

`verify` is the receiving side, for our own tests and as a reference for users; it
agrees with the reference implementation (the `standardwebhooks` package).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.webhook_secrets import SECRET_PREFIX
from shared.webhook_secrets import new_secret as new_secret

SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def _key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part after the `whsec_` prefix.

    Padding is optional (as in the reference implementation), anything else that is not
    base64 is refused, since a typo'd secret would otherwise sign with a wrong key silently.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not base64 after the whsec_ prefix") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    # Bytes, not text: the body is signed exactly as it goes on the wire.
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256>` signature of `msg_id.timestamp.body` with `secret`.

    The version prefix lets receivers skip schemes they do not know (e.g. a future
    asymmetric `v1a`) instead of failing.
    """
    mac = _digest(_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated.

    During a rotation's overlap window both the new and the previous secret are valid,
    so a receiver that holds either of them finds a match.
    """
    if not secrets:
        # An unsigned delivery would be rejected by every receiver; that is a bug here.
        raise ValueError("at least one secret is needed to sign a webhook")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(secrets: list[str], msg_id: str, body: bytes,
                    now: int | None = None) -> dict[str, str]:
    """The headers of one delivery attempt: id, timestamp, signature(s), content type.

    `msg_id` must be the same on every retry of a message (receivers deduplicate on it);
    the timestamp is taken per attempt (`now`, default the current unix time), so a
    retry hours later is not refused as too old.
    """
    timestamp = int(time.time()) if now is None else now
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes,
           tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS, now: int | None = None) -> None:
    """Check a delivery as a receiver would; raise `ValueError` if it must be refused.

    Refused: a missing header, a timestamp more than `tolerance_seconds` from `now`
    (either way: old captures are replays, and far-future ones would stay valid too long),
    or no `v1` signature that matches `secret`. Header names are case-insensitive, as
    in HTTP. Entries of other versions or malformed entries are skipped, not fatal, so
    that a header carrying several schemes still verifies. Comparison is constant-time
    (`hmac.compare_digest`) so response timing does not leak the expected signature.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get(ID_HEADER)
    timestamp_text = lowered.get(TIMESTAMP_HEADER)
    signatures = lowered.get(SIGNATURE_HEADER)
    if not (msg_id and timestamp_text and signatures):
        raise ValueError("missing webhook-id, webhook-timestamp or webhook-signature header")

    try:
        timestamp = int(timestamp_text)
    except ValueError as exc:
        raise ValueError("webhook-timestamp is not an integer") from exc
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance_seconds:
        raise ValueError("webhook timestamp is too old")
    if timestamp > current + tolerance_seconds:
        raise ValueError("webhook timestamp is too new")

    expected = _digest(_key(secret), msg_id, timestamp, body)
    for entry in signatures.split():
        version, sep, encoded = entry.partition(",")
        if not sep or version != SIGNATURE_VERSION:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, candidate):
            return
    raise ValueError("no matching webhook signature")


@dataclass(frozen=True)
class SecretRing:
    """A tenant's signing secrets across a rotation.

    After a rotation the previous secret keeps signing until `previous_until`, so that
    receivers can switch to the new secret at their own pace within the overlap window
    without any delivery failing verification. Use timezone-aware datetimes throughout
    (comparing aware with naive raises `TypeError`).
    """

    current: str
    previous: str | None = None
    previous_until: datetime | None = None

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets to sign with at `now`: the current one, plus the previous one
        while the overlap lasts (`now < previous_until`)."""
        if (self.previous is not None and self.previous_until is not None
                and now < self.previous_until):
            return [self.current, self.previous]
        return [self.current]

    def rotated(self, now: datetime, overlap: timedelta) -> SecretRing:
        """A new ring with a fresh current secret; the old current stays valid as
        `previous` until `now + overlap`. A secret that was still `previous` is dropped:
        only one overlap runs at a time."""
        return SecretRing(current=new_secret(), previous=self.current,
                          previous_until=now + overlap)
