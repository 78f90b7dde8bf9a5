"""POST /v1/quotes, and budgets and plans refusing POST /v1/jobs, in-process over real
databases and S3."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from shared.config import Settings
from shared.db import session_scope
from shared.models import Job, Tenant
from shared.tenants import create_api_key, get_or_create_tenant, set_limits
from tests.api.test_jobs_api import assert_problem, auth
from tests.conftest import make_settings
from tests.helpers import b64, image_bytes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused",
                         plan_limits={"free": 2, "unlimited": None})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def key_for(settings: Settings, name: str, **limits: object) -> str:
    with session_scope(settings.database_url) as session:
        set_limits(session, get_or_create_tenant(session, name), **limits)  # type: ignore[arg-type]
        return create_api_key(session, name)


def jobs_of(settings: Settings, key_tenant: str) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(Job).join(
            Tenant, Tenant.id == Job.tenant_id).where(Tenant.name == key_tenant)) or 0


EDIT = {"image": b64(image_bytes((96, 96))), "prompt": "make it blue"}


def test_a_quote_prices_the_request_and_stores_nothing(
        client: TestClient, settings: Settings) -> None:
    # given a tenant with a budget
    key = key_for(settings, "quote-a", monthly_budget=Decimal("1"))
    # when it asks what a high-quality rectangular gpt-image-1 edit would cost
    body = {**EDIT, "model": "gpt-image-1-edit",
            "options": {"quality": "high", "size": "1024*1536"}}
    answer = client.post("/v1/quotes", json=body, headers=auth(key))
    # then it gets the price, the rule it came from, and where its budget stands
    assert answer.status_code == 200, answer.text
    quote = answer.json()
    assert (quote["estimated"], quote["currency"]) == ("0.25", "USD")
    assert quote["pricing"] == {"model": "gpt-image-1-edit", "provider": "wavespeed",
                                "rule": "quality_size", "units": "1", "unit": "image",
                                "unit_price": "0.25", "taken": "2026-11-26",
                                "source": "seed plan"}
    assert quote["budget"]["ok"] is True
    assert quote["budget"]["budgets"] == [{"scope": "tenant", "budget": "1", "spent": "0",
                                           "in_flight": "0", "estimate": "0.25",
                                           "remaining": "1", "ok": True}]
    # and nothing was created
    assert jobs_of(settings, "quote-a") == 0
    # and the job, once submitted, carries the same estimate
    job = client.post("/v1/jobs", json=body, headers=auth(key)).json()
    assert job["cost"]["estimated"] == quote["estimated"]


def test_a_stability_quote_is_in_credits(client: TestClient, settings: Settings) -> None:
    key = key_for(settings, "quote-b")
    answer = client.post("/v1/quotes", json={**EDIT, "operation": "upscale_creative"},
                         headers=auth(key)).json()
    assert answer["estimated"] == "0.6"
    assert (answer["pricing"]["units"], answer["pricing"]["unit"],
            answer["pricing"]["unit_price"]) == ("60", "credit", "0.01")


def test_a_quote_refuses_what_a_job_would_refuse(client: TestClient, settings: Settings) -> None:
    key = key_for(settings, "quote-c")
    assert_problem(client.post("/v1/quotes", json={**EDIT, "model": "nope"}, headers=auth(key)),
                   422, "unknown_model")
    assert_problem(client.post("/v1/quotes", json={**EDIT, "model": "qwen-edit",
                                                   "options": {"quality": "high"}},
                               headers=auth(key)), 422, "unsupported_option")
    assert_problem(client.post("/v1/quotes", json=EDIT), 401, "unauthorized")


def test_over_budget_a_job_is_refused_with_402_naming_the_numbers(
        client: TestClient, settings: Settings) -> None:
    # given a budget of 0.05 and two qwen-edit jobs (0.02 each) in flight
    key = key_for(settings, "budget-api", monthly_budget=Decimal("0.05"))
    for _ in range(2):
        assert client.post("/v1/jobs", json=EDIT, headers=auth(key)).status_code == 202
    # when a third arrives
    refused = client.post("/v1/jobs", json=EDIT, headers=auth(key))
    # then it is a 402 problem with the budget, the spend and the estimate
    problem = assert_problem(refused, 402, "budget_exceeded")
    assert {k: problem[k] for k in ("budget", "spent", "in_flight", "estimate")} == {
        "budget": "0.05", "spent": "0", "in_flight": "0.04", "estimate": "0.02"}
    assert jobs_of(settings, "budget-api") == 2
    # and the quote says the same before anything is sent
    quote = client.post("/v1/quotes", json=EDIT, headers=auth(key)).json()
    assert quote["budget"]["ok"] is False
    # while a free model still fits
    free = {"image": EDIT["image"], "operation": "grayscale"}
    assert client.post("/v1/jobs", json=free, headers=auth(key)).status_code == 202


def test_past_its_plan_a_tenant_is_refused_with_429_and_retry_after(
        client: TestClient, settings: Settings) -> None:
    key = key_for(settings, "plan-api", plan="free")
    free = {"image": EDIT["image"], "operation": "grayscale"}
    for _ in range(2):
        assert client.post("/v1/jobs", json=free, headers=auth(key)).status_code == 202
    refused = client.post("/v1/jobs", json=free, headers=auth(key))
    problem = assert_problem(refused, 429, "plan_limit_exceeded")
    assert (problem["plan"], problem["limit"], problem["used"]) == ("free", 2, 2)
    assert int(refused.headers["retry-after"]) >= 1
    # and an idempotent replay of an accepted job is not a new edit
    replay = {"Idempotency-Key": "same", **auth(key)}
    other = key_for(settings, "plan-api-2", plan="free")
    first = client.post("/v1/jobs", json=free, headers={**replay, **auth(other)})
    again = client.post("/v1/jobs", json=free, headers={**replay, **auth(other)})
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["idempotent-replayed"] == "true"
