"""Webhook subscriptions at submit, the secret endpoints and the delivery log, in-process
over real databases and S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import Settings
from shared.db import session_scope
from shared.tenants import create_api_key
from tests.api.test_jobs_api import assert_problem, auth, post_job
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(60)

HOOK = "http://receiver.test/hooks"


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         webhook_allowed_hosts="receiver.test")


@pytest.fixture
def other_key(settings: Settings) -> str:
    with session_scope(settings.database_url) as session:
        return create_api_key(session, f"other-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


class TestSubscriptions:
    def test_a_job_takes_a_url_and_events(self, client: TestClient, tenant_key: str) -> None:
        response = post_job(client, tenant_key, webhook_url=HOOK,
                            webhook_events=["job.succeeded", "job.started"])
        assert response.status_code == 202, response.text
        job = response.json()
        assert (job["webhook_url"], job["webhook_events"]) == (
            HOOK, ["job.started", "job.succeeded"])

    @pytest.mark.parametrize("url", ["ftp://receiver.test/x", "file:///etc/passwd",
                                     "http://127.0.0.1:8080/hook", "http://[::1]/hook",
                                     "http://169.254.169.254/latest/meta-data"])
    def test_an_unsafe_url_is_refused_at_submit(self, client: TestClient, tenant_key: str,
                                                url: str) -> None:
        problem = assert_problem(post_job(client, tenant_key, webhook_url=url), 422,
                                 "webhook_url_not_allowed")
        assert "Bearer" not in problem["detail"]

    def test_unknown_events_are_refused(self, client: TestClient, tenant_key: str) -> None:
        assert_problem(post_job(client, tenant_key, webhook_url=HOOK,
                                webhook_events=["job.done"]), 422, "invalid_input")


class TestSecret:
    def test_every_tenant_has_one_and_rotation_keeps_the_old_one_for_a_while(
            self, client: TestClient, tenant_key: str) -> None:
        first = client.get("/v1/webhook-secret", headers=auth(tenant_key)).json()
        assert first["secret"].startswith("whsec_") and first["previous_valid_until"] is None
        rotated = client.post("/v1/webhook-secret/rotate", headers=auth(tenant_key)).json()
        assert rotated["secret"] != first["secret"]
        assert rotated["previous_valid_until"] is not None
        again = client.get("/v1/webhook-secret", headers=auth(tenant_key)).json()
        assert again == rotated

    def test_it_needs_a_key(self, client: TestClient) -> None:
        assert_problem(client.get("/v1/webhook-secret"), 401, "unauthorized")


class TestDeliveries:
    def test_the_log_lists_a_tenants_deliveries_only_and_redelivers(
            self, client: TestClient, tenant_key: str, other_key: str) -> None:
        # given a job with a webhook, canceled (job.canceled is in the default events)
        job = post_job(client, tenant_key, webhook_url=HOOK).json()
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(tenant_key))
        # then its delivery is listed, pending, with no attempt yet
        listed = client.get("/v1/webhook-deliveries", params={"job_id": job["id"]},
                            headers=auth(tenant_key)).json()["data"]
        [delivery] = listed
        assert (delivery["event_type"], delivery["status"], delivery["attempts"]) == (
            "job.canceled", "pending", [])
        assert delivery["webhook_id"].startswith("msg_")
        assert client.get("/v1/webhook-deliveries", params={"status": "delivered",
                                                             "job_id": job["id"]},
                          headers=auth(tenant_key)).json()["data"] == []
        # and another tenant sees none of it
        assert client.get("/v1/webhook-deliveries", params={"job_id": job["id"]},
                          headers=auth(other_key)).json()["data"] == []
        assert_problem(client.post(f"/v1/webhook-deliveries/{delivery['id']}/redeliver",
                                   headers=auth(other_key)), 404, "not_found")
        # and redelivery puts it back in line, same webhook-id
        again = client.post(f"/v1/webhook-deliveries/{delivery['id']}/redeliver",
                            headers=auth(tenant_key))
        assert again.status_code == 202
        assert (again.json()["status"], again.json()["webhook_id"]) == (
            "pending", delivery["webhook_id"])

    def test_a_bad_status_filter_is_a_422(self, client: TestClient, tenant_key: str) -> None:
        response = client.get("/v1/webhook-deliveries", params={"status": "lost"},
                              headers=auth(tenant_key))
        assert response.status_code == 422
