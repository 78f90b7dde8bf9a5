"""GET /v1/recommendations and GET /v1/models' price ranges, in-process over a real
database and a real Redis (the breakers' state lives there)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import Settings
from shared.guards.breaker import build_breaker
from tests.api.test_jobs_api import assert_problem, auth
from tests.conftest import make_settings, redis_db

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str, redis_base: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         redis_url=redis_db(redis_base, "api"), breaker_failures=2,
                         breaker_cooldown_seconds=120)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_an_open_breaker_makes_its_providers_models_unavailable(
        client: TestClient, settings: Settings, tenant_key: str) -> None:
    # given WaveSpeed's breaker opened by two failures in a row
    breaker = build_breaker("wavespeed", settings)
    assert breaker is not None
    breaker.record_failure()
    assert breaker.record_failure() == "open"
    try:
        # when recommendations are asked for an inpaint
        answer = client.get("/v1/recommendations", params={"operation": "inpaint"},
                            headers=auth(tenant_key))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # then every WaveSpeed model is shown unavailable, and only Stability's is picked
        by_id = {m["id"]: m for m in body["models"]}
        assert by_id["gpt-image-1-edit"]["available"] is False
        assert by_id["z-image-turbo-inpaint"]["available"] is False
        assert by_id["stability-inpaint"]["available"] is True
        assert body["picks"]["cheapest"]["model"] == "stability-inpaint"
        assert body["picks"]["best_tier"]["model"] == "stability-inpaint"
    finally:
        breaker.record_success()
    # and once it closes they are offered again
    body = client.get("/v1/recommendations", params={"operation": "inpaint"},
                      headers=auth(tenant_key)).json()
    assert body["picks"]["cheapest"]["model"] == "z-image-turbo-inpaint"


def test_recommendations_need_a_key_and_a_known_operation(
        client: TestClient, tenant_key: str) -> None:
    assert_problem(client.get("/v1/recommendations", params={"operation": "inpaint"}),
                   401, "unauthorized")
    assert_problem(client.get("/v1/recommendations", params={"operation": "juggle"},
                              headers=auth(tenant_key)), 422, "unsupported_operation")


def test_models_show_how_their_price_varies(client: TestClient, tenant_key: str) -> None:
    models = {m["id"]: m for m in client.get("/v1/models",
                                             headers=auth(tenant_key)).json()["data"]}
    assert models["ideogram-character"]["price_range"] == {
        "min": "0.1", "max": "0.2", "varies_by": "rendering_speed",
        "text": "$0.10 to $0.20 by rendering speed"}
    assert models["qwen-edit"]["price_range"]["text"] == "$0.02 per image"
    assert models["local-pillow"]["price_range"]["text"] == "free"
    assert models["local-pillow"]["demo"] is True
