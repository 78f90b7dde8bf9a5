"""WaveSpeed's webhook signature: v3,<hex HMAC-SHA256 of id.timestamp.body>."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from shared.providers.wavespeed_webhooks import WebhookRejected, sign, verify

pytestmark = pytest.mark.timeout(10)

SECRET = "whsec_c2VjcmV0LWtleQ"
BODY = b'{"id":"abc","status":"completed"}'


def headers(ts: int, signature: str, webhook_id: str = "wh_1") -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature}


def test_signature_is_hmac_of_id_timestamp_body_with_secret_text_as_key() -> None:
    ts = int(time.time())
    expected = hmac.new(b"c2VjcmV0LWtleQ", f"wh_1.{ts}.".encode() + BODY,
                        hashlib.sha256).hexdigest()
    assert sign(SECRET, "wh_1", str(ts), BODY) == "v3," + expected
    verify(SECRET, headers(ts, "v3," + expected), BODY)


@pytest.mark.parametrize("change", ["body", "id", "secret", "old", "missing"])
def test_anything_altered_is_rejected(change: str) -> None:
    ts = int(time.time())
    good = sign(SECRET, "wh_1", str(ts), BODY)
    with pytest.raises(WebhookRejected):
        if change == "body":
            verify(SECRET, headers(ts, good), BODY + b" ")
        elif change == "id":
            verify(SECRET, headers(ts, good, webhook_id="wh_2"), BODY)
        elif change == "secret":
            verify("whsec_other", headers(ts, good), BODY)
        elif change == "old":
            old = ts - 301
            verify(SECRET, headers(old, sign(SECRET, "wh_1", str(old), BODY)), BODY)
        else:
            verify(SECRET, {"webhook-id": "wh_1"}, BODY)
