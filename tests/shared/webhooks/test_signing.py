"""Standard Webhooks signing, checked against the reference implementation.

The `standardwebhooks` package is the receiver: whatever `webhook_headers` produces must
verify with `Webhook(secret).verify(body, headers)`, and whatever it rejects our own
`verify` must reject too. The reference reads the wall clock (no `now` to pass), so the
timestamps here are relative to the current time.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.webhooks.signing import (
    SecretRing,
    new_secret,
    sign,
    signature_header,
    verify,
    webhook_headers,
)

pytestmark = pytest.mark.timeout(30)

MSG_ID = "msg_2mVxJk3b9TqYp0sAzRwLcE"
# Non-ASCII on purpose: the raw bytes are signed, not a re-serialisation.
BODY = json.dumps({"type": "job.succeeded", "data": {"id": "job_1", "prompt": "café au lait"}},
                  ensure_ascii=False).encode()


def reference_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def ours_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        verify(secret, headers, body)
    except ValueError:
        return False
    return True


def test_new_secrets_are_distinct_prefixed_and_decode_to_24_bytes() -> None:
    # given a batch of fresh secrets
    secrets = [new_secret() for _ in range(50)]
    # then no two are alike, each has the whsec_ prefix and 24 bytes behind it
    assert len(set(secrets)) == len(secrets)
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
        # and the reference accepts it as a secret
        Webhook(secret)


def test_sign_matches_the_spec_example() -> None:
    # given the example of the Standard Webhooks / Svix documentation
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    # when it is signed
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                     b'{"test": 2432232314}')
    # then it is the documented signature
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_the_reference_implementation() -> None:
    # given a secret and a JSON body
    secret = new_secret()
    now = int(time.time())
    # when the delivery headers are made
    headers = webhook_headers([secret], MSG_ID, BODY, now=now)
    # then they are the three Standard Webhooks headers and the content type
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"] == sign(secret, MSG_ID, now, BODY)
    assert headers["content-type"] == "application/json"
    # and the reference verifies them (and hands back the parsed body), as do we
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    verify(secret, headers, BODY)


def test_the_timestamp_defaults_to_now() -> None:
    # given no explicit time
    before = int(time.time())
    # when headers are made
    headers = webhook_headers([new_secret()], MSG_ID, BODY)
    # then they carry the current unix time
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())


@dataclass(frozen=True)
class Delivery:
    secret: str  # the secret the receiver holds
    headers: dict[str, str]
    body: bytes


def _valid() -> Delivery:
    secret = new_secret()
    return Delivery(secret, webhook_headers([secret], MSG_ID, BODY), BODY)


def _tampered_body() -> Delivery:
    d = _valid()
    return Delivery(d.secret, d.headers, BODY.replace(b"job_1", b"job_2"))


def _other_msg_id() -> Delivery:
    d = _valid()
    return Delivery(d.secret, {**d.headers, "webhook-id": "msg_other"}, d.body)


def _wrong_secret() -> Delivery:
    d = _valid()
    return Delivery(new_secret(), d.headers, d.body)


def _old_timestamp() -> Delivery:
    secret = new_secret()
    return Delivery(secret, webhook_headers([secret], MSG_ID, BODY, now=int(time.time()) - 600),
                    BODY)


def _future_timestamp() -> Delivery:
    secret = new_secret()
    return Delivery(secret, webhook_headers([secret], MSG_ID, BODY, now=int(time.time()) + 600),
                    BODY)


def _restamped() -> Delivery:
    # a captured delivery replayed with a fresh timestamp but the old signature
    d = _valid()
    stamp = str(int(d.headers["webhook-timestamp"]) + 1)
    return Delivery(d.secret, {**d.headers, "webhook-timestamp": stamp}, d.body)


def _missing_signature() -> Delivery:
    d = _valid()
    headers = {k: v for k, v in d.headers.items() if k != "webhook-signature"}
    return Delivery(d.secret, headers, d.body)


def _uppercase_header_names() -> Delivery:
    d = _valid()
    return Delivery(d.secret, {k.title(): v for k, v in d.headers.items()}, d.body)


def _unknown_version_first() -> Delivery:
    # entries of a scheme the receiver does not know are skipped, not fatal
    d = _valid()
    sig = f"v1a,{base64.b64encode(b'x' * 64).decode()} {d.headers['webhook-signature']}"
    return Delivery(d.secret, {**d.headers, "webhook-signature": sig}, d.body)


def _signature_under_another_version() -> Delivery:
    # the right MAC labelled with another version does not count as v1
    d = _valid()
    sig = d.headers["webhook-signature"].replace("v1,", "v2,")
    return Delivery(d.secret, {**d.headers, "webhook-signature": sig}, d.body)


def _rotation(now: datetime) -> tuple[SecretRing, SecretRing]:
    before = SecretRing(current=new_secret())
    return before, before.rotated(now, overlap=timedelta(hours=24))


def _during_overlap(which: str) -> Callable[[], Delivery]:
    def make() -> Delivery:
        now = datetime.now(UTC)
        old, new = _rotation(now)
        headers = webhook_headers(new.signing_secrets(now + timedelta(hours=1)), MSG_ID, BODY)
        return Delivery(old.current if which == "old" else new.current, headers, BODY)
    return make


def _after_overlap(which: str) -> Callable[[], Delivery]:
    def make() -> Delivery:
        now = datetime.now(UTC)
        old, new = _rotation(now)
        headers = webhook_headers(new.signing_secrets(now + timedelta(hours=25)), MSG_ID, BODY)
        return Delivery(old.current if which == "old" else new.current, headers, BODY)
    return make


CASES: dict[str, tuple[Callable[[], Delivery], bool]] = {
    "valid": (_valid, True),
    "tampered body": (_tampered_body, False),
    "another msg id": (_other_msg_id, False),
    "wrong secret": (_wrong_secret, False),
    "old timestamp": (_old_timestamp, False),
    "future timestamp": (_future_timestamp, False),
    "restamped replay": (_restamped, False),
    "missing signature header": (_missing_signature, False),
    "header names in another case": (_uppercase_header_names, True),
    "unknown version before v1": (_unknown_version_first, True),
    "right mac under another version": (_signature_under_another_version, False),
    "overlap, receiver holds the old secret": (_during_overlap("old"), True),
    "overlap, receiver holds the new secret": (_during_overlap("new"), True),
    "after overlap, old secret": (_after_overlap("old"), False),
    "after overlap, new secret": (_after_overlap("new"), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_our_verify_agrees_with_the_reference(case: str) -> None:
    # given a delivery as a receiver gets it
    make, accepted = CASES[case]
    d = make()
    # when the reference implementation and our verify check it
    # then both reach the expected verdict
    assert reference_accepts(d.secret, d.headers, d.body) is accepted
    assert ours_accepts(d.secret, d.headers, d.body) is accepted


def test_during_a_rotation_overlap_the_header_carries_both_signatures() -> None:
    # given a ring rotated with a one-day overlap
    now = datetime.now(UTC)
    old, new = _rotation(now)
    assert (new.previous, new.previous_until) == (old.current, now + timedelta(hours=24))
    assert new.current not in (old.current, new.previous)
    # when a delivery is signed inside the window
    secrets = new.signing_secrets(now + timedelta(hours=23))
    headers = webhook_headers(secrets, MSG_ID, BODY)
    # then the header has two signatures, new first, and the reference takes either secret
    assert secrets == [new.current, old.current]
    assert headers["webhook-signature"].split(" ") == [
        sign(new.current, MSG_ID, int(headers["webhook-timestamp"]), BODY),
        sign(old.current, MSG_ID, int(headers["webhook-timestamp"]), BODY),
    ]
    Webhook(old.current).verify(BODY, headers)
    Webhook(new.current).verify(BODY, headers)


def test_after_the_overlap_only_the_new_secret_signs() -> None:
    # given a ring rotated with a one-day overlap
    now = datetime.now(UTC)
    old, new = _rotation(now)
    # when the window ends (the end itself is outside it)
    for later in (now + timedelta(hours=24), now + timedelta(days=30)):
        headers = webhook_headers(new.signing_secrets(later), MSG_ID, BODY)
        # then one signature, by the new secret; the reference refuses the old one
        assert new.signing_secrets(later) == [new.current]
        assert " " not in headers["webhook-signature"]
        Webhook(new.current).verify(BODY, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old.current).verify(BODY, headers)


def test_rotating_again_drops_the_oldest_secret() -> None:
    # given a ring rotated twice, the second time inside the first overlap
    now = datetime.now(UTC)
    first = SecretRing(current=new_secret())
    second = first.rotated(now, timedelta(hours=24))
    third = second.rotated(now + timedelta(hours=1), timedelta(hours=24))
    # then only the two latest secrets sign
    assert third.signing_secrets(now + timedelta(hours=2)) == [third.current, second.current]
    assert first.current not in third.signing_secrets(now + timedelta(hours=2))


def test_our_verify_takes_an_explicit_clock_and_tolerance() -> None:
    # given a delivery signed at t
    secret, t = new_secret(), 1_700_000_000
    headers = webhook_headers([secret], MSG_ID, BODY, now=t)
    # then it passes up to the tolerance on either side, and not beyond
    verify(secret, headers, BODY, now=t + 300)
    verify(secret, headers, BODY, now=t - 300)
    with pytest.raises(ValueError, match="too old"):
        verify(secret, headers, BODY, now=t + 301)
    with pytest.raises(ValueError, match="too new"):
        verify(secret, headers, BODY, now=t - 301)
    verify(secret, headers, BODY, tolerance_seconds=3600, now=t + 3000)


@pytest.mark.parametrize("signature", ["v1", "v1,not base64!", "garbage", "v1,"])
def test_our_verify_refuses_malformed_signatures_with_value_error(signature: str) -> None:
    # given a header whose signature entry is malformed
    secret = new_secret()
    headers = {**webhook_headers([secret], MSG_ID, BODY), "webhook-signature": signature}
    # then our verify refuses it as a verification failure, not a crash
    with pytest.raises(ValueError, match="no matching"):
        verify(secret, headers, BODY)


def test_signing_needs_at_least_one_secret_and_a_valid_one() -> None:
    # given no secrets, or a secret that is not base64
    # then signing refuses rather than sending an unsigned or wrongly keyed webhook
    with pytest.raises(ValueError, match="at least one secret"):
        signature_header([], MSG_ID, 0, BODY)
    with pytest.raises(ValueError, match="base64"):
        sign("whsec_not*base64", MSG_ID, 0, BODY)
    with pytest.raises(ValueError, match="empty"):
        sign("whsec_", MSG_ID, 0, BODY)
