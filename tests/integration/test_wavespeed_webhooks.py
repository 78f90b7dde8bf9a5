"""With EDITQ_PUBLIC_BASE_URL set, WaveSpeed's signed webhook finishes the job at once.

Polling is made deliberately slow here (first look after 20 s), so a job that
finishes within a few seconds can only have been finished by the webhook.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from cli.stack import Stack, free_port
from shared.db import session_scope
from shared.tenants import create_api_key
from tests.api_client import ApiClient
from tests.conftest import SIM_KEY, live_env, redis_db
from tests.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def hooked(stack: Stack, database_url: str, redis_base: str, s3_url: str,
           bucket: str) -> Iterator[tuple[str, str, ApiClient]]:
    sub = Stack(workdir=stack.workdir)
    try:
        sim_url = sub.start_wavespeed_sim(latency="1", extra=["--api-key", SIM_KEY])
        port = free_port()
        sub.env = {**live_env(database_url, redis_db(redis_base, "webhooks"), s3_url, bucket,
                              sim_url),
                   "EDITQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                   # No poll within a test's time: a job that finishes was told by webhook.
                   "EDITQ_FOLLOW_INITIAL_SECONDS": "60", "EDITQ_FOLLOW_MAX_SECONDS": "60"}
        sub.start_worker(name="worker-webhooks", concurrency=4)
        _, api_url = sub.start_api(port=port)
        with session_scope(database_url) as session:
            client = ApiClient(api_url, create_api_key(session, "webhooks"))
        yield api_url, sim_url, client
    finally:
        sub.stop()


def test_signed_webhook_finishes_the_job_without_waiting_for_a_poll(
        hooked: tuple[str, str, ApiClient]) -> None:
    api_url, sim_url, client = hooked
    # given a 1 s edit, and a first poll that would only come after 60 s
    polls_before = httpx.get(f"{sim_url}/_sim/stats", timeout=5).json()["polls"]
    job = client.submit(image_bytes(), prompt="webhook me", model="flux-kontext-pro")
    # when the provider calls back
    done = client.wait(job["id"], timeout=45)
    # then the job is done after one look at the task, the one the webhook asked for
    assert done["status"] == "succeeded"
    assert httpx.get(f"{sim_url}/_sim/stats", timeout=5).json()["polls"] == polls_before + 1
    deliveries = httpx.get(f"{sim_url}/_sim/stats", timeout=5).json()["webhooks"]
    assert any(d["url"].startswith(api_url) and d["status"] == 200 for d in deliveries)


def test_forged_webhook_is_refused(hooked: tuple[str, str, ApiClient]) -> None:
    api_url, _, _ = hooked
    body = b'{"id": "0123456789abcdef0123456789abcdef", "status": "completed"}'
    response = httpx.post(f"{api_url}/v1/providers/wavespeed/webhook", content=body, headers={
        "webhook-id": "x", "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v3," + "0" * 64, "content-type": "application/json"})
    assert response.status_code == 401
    assert response.json()["code"] == "webhook_signature_invalid"
