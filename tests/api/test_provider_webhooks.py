"""POST /v1/providers/{provider}/webhook in-process: one route for every provider that
calls back, reading how from its registry entry. The whole trip with WaveSpeed's
simulator is tests/integration/test_wavespeed_webhooks.py."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from shared import redis_keys
from shared.config import Settings
from shared.db import session_scope
from shared.jobs import states
from shared.models import Job
from shared.providers.base import ImageEditProvider
from shared.providers.registry import PROVIDERS, ProviderEntry, Registry, Webhooks
from shared.providers.wavespeed import WaveSpeedEditProvider
from shared.providers.wavespeed_webhooks import WebhookRejected, sign
from shared.services import Services
from shared.tenants import get_or_create_tenant
from tests.api.test_jobs_api import assert_problem
from tests.conftest import make_settings, redis_db
from tests.shared.scripted import Scripted

pytestmark = pytest.mark.timeout(60)

SECRET = "whsec_c2VjcmV0LWtleQ"


def _acme_verify(provider: ImageEditProvider, headers: Mapping[str, str], body: bytes) -> None:
    if headers.get("x-acme-signature") != "good":
        raise WebhookRejected("acme says no")


# A provider that is only a registry entry: its callbacks carry the request id as the body.
ACME = ProviderEntry("acme", lambda settings: Scripted([], name="acme", webhooks=True),
                     webhooks=Webhooks(_acme_verify, lambda body: body.decode()))


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str, redis_base: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         redis_url=redis_db(redis_base, "api"), wavespeed_api_key="ws-key")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    services: Services = app.state.services
    services.registry = Registry([*PROVIDERS, ACME])
    with TestClient(app) as client:
        yield client


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def submitted_job(database_url: str, provider: str, request_id: str) -> str:
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, f"hooks-{uuid.uuid4().hex[:8]}")
        job = Job(id=states.new_job_id(), tenant_id=tenant.id, status=states.RUNNING,
                  operation="general_edit", model="m", provider=provider,
                  provider_request_id=request_id, queue=f"q-{uuid.uuid4().hex[:8]}")
        session.add(job)
        return job.id


def test_a_provider_unknown_or_without_webhooks_is_a_404(client: TestClient) -> None:
    # given a provider nobody registered, and one registered that never calls back
    # when either is called back
    # then both are a 404 problem: there is no such webhook
    for provider in ("nobody", "stability"):
        response = client.post(f"/v1/providers/{provider}/webhook", content=b"{}")
        assert_problem(response, 404, "not_found")


def test_a_registered_providers_callback_wakes_its_job(client: TestClient,
                                                       settings: Settings) -> None:
    # given a job submitted to a provider that is only a registry entry, and a worker's
    # ear on the wake channel
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    job_id = submitted_job(settings.database_url, "acme", request_id)
    listener = redis.Redis.from_url(settings.redis_url).pubsub()
    listener.subscribe(redis_keys.wake_channel(settings.redis_url))
    try:
        # when the provider calls back with a good signature
        response = client.post("/v1/providers/acme/webhook", content=request_id.encode(),
                               headers={"x-acme-signature": "good"})
        # then the job is woken, in whichever worker follows it
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "accepted", "job_id": job_id}
        heard = [listener.get_message(timeout=1) for _ in range(3)]
        assert job_id.encode() in [m["data"] for m in heard if m and m["type"] == "message"]
    finally:
        listener.close()
    # and a call its entry does not verify is refused, waking nothing
    forged = client.post("/v1/providers/acme/webhook", content=request_id.encode(),
                         headers={"x-acme-signature": "forged"})
    assert_problem(forged, 401, "webhook_signature_invalid")
    # and a call about a request no job made is acknowledged and ignored
    unknown = client.post("/v1/providers/acme/webhook", content=b"req-nobody",
                          headers={"x-acme-signature": "good"})
    assert unknown.json() == {"status": "ignored"}


def test_wavespeeds_callbacks_keep_their_url(client: TestClient) -> None:
    # given the WaveSpeed provider, whose account secret WaveSpeed answers when asked
    provider = services_of(client).provider("wavespeed")
    assert isinstance(provider, WaveSpeedEditProvider)
    provider.client.http = httpx.Client(
        base_url="http://wavespeed.test", transport=httpx.MockTransport(
            lambda request: httpx.Response(200, json={"code": 200,
                                                      "data": {"secret": SECRET}})))
    body = json.dumps({"id": uuid.uuid4().hex, "status": "completed"}).encode()
    now = str(int(time.time()))
    # when it calls back at /v1/providers/wavespeed/webhook, signed and then forged
    signed = client.post("/v1/providers/wavespeed/webhook", content=body, headers={
        "webhook-id": "wh_1", "webhook-timestamp": now,
        "webhook-signature": sign(SECRET, "wh_1", now, body)})
    forged = client.post("/v1/providers/wavespeed/webhook", content=body, headers={
        "webhook-id": "wh_1", "webhook-timestamp": now, "webhook-signature": "v3," + "0" * 64})
    # then the signed one is read (no job made that task: ignored), the forged one refused
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"status": "ignored"}
    assert_problem(forged, 401, "webhook_signature_invalid")
    # and a signed body without a task id is a 422
    empty = b"{}"
    no_id = client.post("/v1/providers/wavespeed/webhook", content=empty, headers={
        "webhook-id": "wh_2", "webhook-timestamp": now,
        "webhook-signature": sign(SECRET, "wh_2", now, empty)})
    assert_problem(no_id, 422, "invalid_input")
