"""`verify_webhook` on deliveries from editq's own outbox: a stack of its own (API, worker,
and beat dispatching webhooks every 0.2 s, 127.0.0.1 allowed as a receiver) and a real
receiver on loopback; the result agrees with the reference library and with editq's own
signing."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from editq_client import Client, WebhookVerificationError, verify_webhook
from standardwebhooks.webhooks import Webhook

from cli.stack import Stack
from shared.db import session_scope
from shared.tenants import create_api_key
from shared.webhooks import signing
from tests.conftest import live_env, redis_db
from tests.helpers import image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class Received:
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[tuple[Received, str]]:
    state = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with state.lock:
                state.deliveries.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class HookStack:
    api_url: str
    database_url: str

    def key(self, tenant: str) -> str:
        with session_scope(self.database_url) as session:
            return create_api_key(session, tenant)


@pytest.fixture(scope="module")
def hooks(stack: Stack, database_url: str, redis_base: str, s3_url: str,
          bucket: str) -> Iterator[HookStack]:
    sub = Stack(workdir=stack.workdir)
    try:
        # local-pillow jobs only: no provider simulator is called
        sub.env = {**live_env(database_url, redis_db(redis_base, "deliveries"), s3_url, bucket,
                              "http://127.0.0.1:9"),
                   "EDITQ_WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.2",
                   "EDITQ_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
        sub.start_worker(name="worker-client-hooks", concurrency=2)
        sub.spawn("beat-client-hooks", [sys.executable, "-m", "cli.main", "beat",
                                        "--loglevel", "WARNING"])
        _, api_url = sub.start_api()
        yield HookStack(api_url, database_url)
    finally:
        sub.stop()


def test_verify_webhook_accepts_editq_s_deliveries_and_refuses_anything_else(
        hooks: HookStack, receiver: tuple[Received, str]) -> None:
    # given a tenant's secret and a job that names the receiver
    state, url = receiver
    key = hooks.key(f"client-hooks-{time.monotonic_ns()}")
    with Client(hooks.api_url, key) as editq:
        secret = editq.webhooks.secret().secret
        job = editq.run(image_bytes(), operation="grayscale", webhook_url=url, timeout=60)
    # when editq's outbox delivers job.succeeded
    headers, body = wait_for(lambda: state.deliveries[0] if state.deliveries else None, 30,
                             "the webhook delivery")
    # then it verifies, and gives the event: the job as GET answers it
    event = verify_webhook(body, headers, secret)
    assert event["type"] == "job.succeeded" and event["data"]["id"] == job.id
    # and the reference library and editq's own check agree
    assert Webhook(secret).verify(body, dict(headers)) == event
    signing.verify(secret, headers, body)
    # and a changed body, another secret, or an old capture are refused
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(body.replace(b"succeeded", b"failed!!!"), headers, secret)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(body, headers, signing.new_secret())
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(body, headers, secret, now=int(headers["webhook-timestamp"]) + 301)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(body, {k: v for k, v in headers.items()
                              if k.lower() != "webhook-signature"}, secret)


def test_after_a_rotation_either_secret_verifies_a_redelivery(
        hooks: HookStack, receiver: tuple[Received, str]) -> None:
    state, url = receiver
    key = hooks.key(f"client-rotate-{time.monotonic_ns()}")
    with Client(hooks.api_url, key) as editq:
        job = editq.run(image_bytes(), operation="grayscale", webhook_url=url, timeout=60)
        wait_for(lambda: state.deliveries, 30, "the first delivery")
        old = editq.webhooks.secret()
        new = editq.webhooks.rotate_secret()
        assert new.secret != old.secret and new.previous_valid_until is not None
        # when the delivery is sent again, signed by both secrets during the overlap
        [delivery] = wait_for(lambda: editq.webhooks.deliveries(
            job_id=job.id, status="delivered").data, 30, "the delivery's record")
        assert delivery.event_type == "job.succeeded" and delivery.attempts
        assert editq.webhooks.redeliver(delivery.id).id == delivery.id
    headers, body = wait_for(lambda: state.deliveries[1] if len(state.deliveries) > 1
                             else None, 30, "the redelivery")
    # then it carries two signatures, and each secret verifies it
    assert len(headers["webhook-signature"].split()) == 2
    assert verify_webhook(body, headers, old.secret)["data"]["id"] == job.id
    assert verify_webhook(body, headers, new.secret)["data"]["id"] == job.id


def test_verify_webhook_matches_editq_s_signing_exactly() -> None:
    # given a body signed as editq signs it, with a secret whose base64 has no padding
    secret = signing.new_secret().rstrip("=")
    body = b'{"type":"job.succeeded","data":{"id":"job_1","emoji":"\xf0\x9f\x8e\xa8"}}'
    headers = signing.webhook_headers([secret], "msg_1", body)
    # then the client verifies it, in any header case
    assert verify_webhook(body, {k.upper(): v for k, v in headers.items()}, secret)["data"][
        "id"] == "job_1"
    # and a signature of another version beside it is skipped, not fatal
    headers["webhook-signature"] = "v1a,AAAA " + headers["webhook-signature"]
    assert verify_webhook(body, headers, secret)["type"] == "job.succeeded"
