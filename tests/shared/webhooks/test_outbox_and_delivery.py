"""The outbox and the deliverer, on a real database and S3; the receiver here is an httpx
mock transport (the real trip over loopback is tests/integration/test_webhooks.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.jobs import lookup, states
from shared.jobs.submission import EditRequest, submit_job
from shared.models import Tenant, WebhookAttempt, WebhookDelivery
from shared.services import Services
from shared.storage import Storage
from shared.tenants import Principal
from shared.webhooks.delivery import deliver, take_due
from shared.webhooks.outbox import check_events, rotate_secret, secret_ring
from tests.conftest import make_settings
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(60)

HOOK = "http://receiver.test/hooks"


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         webhook_allowed_hosts="receiver.test",
                         webhook_retry_schedule="5,300,1800")


@pytest.fixture
def job_with_hook(settings: Settings, storage: Storage,
                  principal: Principal, services: Services) -> Callable[..., str]:
    def make(**fields: Any) -> str:
        fields.setdefault("webhook_url", HOOK)
        with session_scope(settings.database_url) as session:
            job, _ = submit_job(session, services, principal,
                                EditRequest(images=[image_bytes()], operation="grayscale",
                                            **fields))
        return job.id
    return make


def outbox(settings: Settings, job_id: str) -> list[WebhookDelivery]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(WebhookDelivery).where(
            WebhookDelivery.job_id == job_id).order_by(WebhookDelivery.seq)))


def run_to_success(settings: Settings, job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        states.claim(session, job_id, 60)
    with session_scope(settings.database_url) as session:
        assert states.succeed(session, job_id, [])


class Receiver:
    """Answers with the scripted statuses in turn, recording every request."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0), headers=self.headers)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


@pytest.mark.every_database
class TestOutbox:
    def test_a_terminal_transition_writes_its_event_in_the_same_transaction(
            self, settings: Settings, job_with_hook: Any) -> None:
        # given a job with a webhook and the default subscription (terminal events)
        job_id = job_with_hook()
        # when it starts and then succeeds
        run_to_success(settings, job_id)
        # then only job.succeeded is in the outbox, due now, with the job as GET shows it
        [row] = outbox(settings, job_id)
        assert (row.event_type, row.url, row.status) == ("job.succeeded", HOOK, "pending")
        assert row.payload["type"] == "job.succeeded"
        assert row.payload["data"]["id"] == job_id
        assert row.payload["data"]["status"] == "succeeded"
        assert row.msg_id.startswith("msg_")

    def test_a_rolled_back_transition_leaves_no_event(self, settings: Settings,
                                                      job_with_hook: Any) -> None:
        job_id = job_with_hook(webhook_events=["job.started"])
        with pytest.raises(RuntimeError), session_scope(settings.database_url) as session:
            states.claim(session, job_id, 60)
            raise RuntimeError("the worker crashed before committing")
        assert outbox(settings, job_id) == []

    def test_started_is_sent_once_even_when_the_job_runs_again(
            self, settings: Settings, job_with_hook: Any) -> None:
        job_id = job_with_hook(webhook_events=["job.started", "job.failed"])
        for _ in range(2):
            with session_scope(settings.database_url) as session:
                states.claim(session, job_id, 60)
            with session_scope(settings.database_url) as session:
                states.requeue(session, job_id, "try again", 0)
        assert [r.event_type for r in outbox(settings, job_id)] == ["job.started"]

    def test_the_tenants_default_url_serves_jobs_without_one(
            self, settings: Settings, principal: Principal, job_with_hook: Any) -> None:
        with session_scope(settings.database_url) as session:
            session.execute(update(Tenant).where(Tenant.id == principal.tenant_id)
                            .values(webhook_url="http://receiver.test/default"))
        job_id = job_with_hook(webhook_url=None)
        with session_scope(settings.database_url) as session:
            lookup.cancel(session, principal.tenant_id, job_id)
        [row] = outbox(settings, job_id)
        assert (row.event_type, row.url) == ("job.canceled", "http://receiver.test/default")

    def test_no_url_no_event(self, settings: Settings, job_with_hook: Any) -> None:
        job_id = job_with_hook(webhook_url=None)
        run_to_success(settings, job_id)
        assert outbox(settings, job_id) == []

    def test_unknown_events_are_refused(self) -> None:
        from shared.errors import InvalidInput

        with pytest.raises(InvalidInput, match=r"job\.exploded"):
            check_events(["job.succeeded", "job.exploded"])
        with pytest.raises(InvalidInput):
            check_events([])


class TestDelivery:
    def sent(self, settings: Settings, storage: Storage, job_id: str,
             receiver: Receiver) -> str:
        [row] = outbox(settings, job_id)
        with receiver.client() as http:
            return deliver(row.id, settings, storage, http)

    def test_a_2xx_delivers_a_body_signed_per_standard_webhooks(
            self, settings: Settings, storage: Storage, principal: Principal,
            job_with_hook: Any) -> None:
        # given a succeeded job and a receiver that accepts
        job_id = job_with_hook()
        run_to_success(settings, job_id)
        receiver = Receiver(204)
        # when its event is delivered
        assert self.sent(settings, storage, job_id, receiver) == "delivered"
        # then the reference implementation verifies it with the tenant's secret
        [request] = receiver.requests
        with session_scope(settings.database_url) as session:
            secret = secret_ring(session, principal.tenant_id).current
        body = Webhook(secret).verify(request.content, dict(request.headers))
        assert body["type"] == "job.succeeded" and body["data"]["id"] == job_id
        [row] = outbox(settings, job_id)
        assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 204)
        assert request.headers["webhook-id"] == row.msg_id

    def test_a_failure_is_retried_on_the_schedule_kept_in_the_database(
            self, settings: Settings, storage: Storage, job_with_hook: Any) -> None:
        job_id = job_with_hook()
        run_to_success(settings, job_id)
        before = utcnow()
        assert self.sent(settings, storage, job_id, Receiver(500)) == "pending"
        [row] = outbox(settings, job_id)
        # the first retry is 5 s away, +-10%
        assert row.next_attempt_at is not None
        delay = (row.next_attempt_at - before).total_seconds()
        assert 4.4 <= delay <= 5.6, delay
        with session_scope(settings.database_url) as session:
            [attempt] = session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id == row.id))
        assert (attempt.status_code, attempt.error) == (500, "HTTP 500")

    def test_429_and_503_honour_retry_after(self, settings: Settings, storage: Storage,
                                            job_with_hook: Any) -> None:
        job_id = job_with_hook()
        run_to_success(settings, job_id)
        before = utcnow()
        self.sent(settings, storage, job_id, Receiver(503, headers={"retry-after": "120"}))
        [row] = outbox(settings, job_id)
        assert row.next_attempt_at is not None
        assert (row.next_attempt_at - before).total_seconds() >= 120

    def test_the_schedule_used_up_fails_the_delivery(
            self, settings: Settings, storage: Storage, job_with_hook: Any) -> None:
        job_id = job_with_hook()
        run_to_success(settings, job_id)
        for _ in range(4):  # the first attempt and the schedule's three retries
            self.sent(settings, storage, job_id, Receiver(502))
        [row] = outbox(settings, job_id)
        assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 4, None)

    def test_410_stops_every_pending_delivery_to_that_url(
            self, settings: Settings, storage: Storage, principal: Principal,
            job_with_hook: Any) -> None:
        first, second = job_with_hook(), job_with_hook()
        run_to_success(settings, first)
        run_to_success(settings, second)
        assert self.sent(settings, storage, first, Receiver(410)) == "gone"
        assert [r.status for r in outbox(settings, second)] == ["gone"]

    def test_an_unsafe_url_is_never_contacted(
            self, settings: Settings, storage: Storage, job_with_hook: Any) -> None:
        # given a delivery whose URL became unsafe (allowed then, not now)
        job_id = job_with_hook()
        run_to_success(settings, job_id)
        strict = settings.model_copy(update={"webhook_allowed_hosts": ""})
        with session_scope(settings.database_url) as session:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                            .values(url="http://127.0.0.1:9/hooks"))
        receiver = Receiver(200)
        [row] = outbox(settings, job_id)
        with receiver.client() as http:
            assert deliver(row.id, strict, storage, http) == "failed"
        assert receiver.requests == []

    @pytest.mark.every_database
    def test_due_deliveries_are_taken_once(self, settings: Settings,
                                           job_with_hook: Any) -> None:
        job_id = job_with_hook()
        run_to_success(settings, job_id)
        [row] = outbox(settings, job_id)
        assert row.id in take_due(settings)
        assert row.id not in take_due(settings)  # its lease moved it a minute ahead

    def test_output_links_are_fresh_at_each_attempt(
            self, settings: Settings, storage: Storage, job_with_hook: Any) -> None:
        job_id = job_with_hook()
        with session_scope(settings.database_url) as session:
            states.claim(session, job_id, 60)
        storage.put(f"outputs/{job_id}/0.png", image_bytes(), "image/png")
        with session_scope(settings.database_url) as session:
            states.succeed(session, job_id, [{"key": f"outputs/{job_id}/0.png",
                                            "content_type": "image/png", "width": 64,
                                            "height": 48, "bytes": 10}])
        receiver = Receiver(200)
        self.sent(settings, storage, job_id, receiver)
        [output] = json.loads(receiver.requests[0].content)["data"]["outputs"]
        assert "key" not in output
        assert httpx.get(output["url"], timeout=10).content == image_bytes()


def test_rotation_signs_with_both_secrets_during_the_overlap(
        settings: Settings, storage: Storage, principal: Principal,
        job_with_hook: Any) -> None:
    # given a rotated secret
    with session_scope(settings.database_url) as session:
        old = secret_ring(session, principal.tenant_id).current
        new = rotate_secret(session, settings, principal.tenant_id).current
    job_id = job_with_hook()
    run_to_success(settings, job_id)
    receiver = Receiver(200)
    [row] = outbox(settings, job_id)
    with receiver.client() as http:
        deliver(row.id, settings, storage, http)
    # then receivers holding either secret can verify
    request = receiver.requests[0]
    for secret in (old, new):
        Webhook(secret).verify(request.content, dict(request.headers))
    # and once the overlap is over only the new one signs
    with session_scope(settings.database_url) as session:
        session.execute(update(Tenant).where(Tenant.id == principal.tenant_id).values(
            webhook_secret_previous_until=utcnow() - timedelta(seconds=1)))
        ring = secret_ring(session, principal.tenant_id)
    assert ring.signing_secrets(utcnow()) == [new]


def test_the_event_pictures_the_job_as_its_transaction_commits_it(
        settings: Settings, job_with_hook: Any) -> None:
    # given a success recorded and then charged in the same transaction (with a savepoint)
    from decimal import Decimal

    from shared.money import ledger
    from shared.providers.catalog import load_catalog

    job_id = job_with_hook()
    with session_scope(settings.database_url) as session:
        job = states.claim(session, job_id, 60)
    assert job is not None
    with session_scope(settings.database_url) as session:
        states.succeed(session, job_id, [])
        ledger.charge(session, job, load_catalog().get("local-pillow").price(), reason="succeeded")
        ledger.close(session, job_id)
    # then the event carries the cost the transaction ended with
    [row] = outbox(settings, job_id)
    assert row.payload["data"]["cost"]["actual"] == "0"
    assert Decimal(row.payload["data"]["cost"]["estimated"]) == 0
