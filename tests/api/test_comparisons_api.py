"""POST/GET /v1/comparisons and votes, in-process over real databases and S3.

No worker runs here, so the comparison's jobs stay queued: these tests are about
what is checked, admitted, stored and shown. A comparison that runs to the end on
the live stack is in tests/integration/test_comparisons.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from shared.config import Settings
from shared.db import session_scope
from shared.models import Comparison, Job, Tenant
from tests.api.test_jobs_api import assert_problem, auth
from tests.api.test_quotes_api import key_for
from tests.conftest import make_settings
from tests.helpers import b64, image_bytes

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]

IMAGE = b64(image_bytes((96, 64)))
EDIT = {"image": IMAGE, "prompt": "make the sky purple", "operation": "general_edit"}


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def stored(settings: Settings, tenant: str) -> tuple[int, int]:
    """(comparisons, jobs) the tenant has."""
    with session_scope(settings.database_url) as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        return (session.scalar(select(func.count()).select_from(Comparison)
                               .where(Comparison.tenant_id == tenant_id)) or 0,
                session.scalar(select(func.count()).select_from(Job)
                               .where(Job.tenant_id == tenant_id)) or 0)


def test_a_comparison_makes_one_queued_job_per_model_sharing_the_input(
        client: TestClient, settings: Settings) -> None:
    # given a tenant
    key = key_for(settings, "cmp-make")
    # when it compares three models on one input
    models = ["qwen-edit", "flux-kontext-pro", "gpt-image-1-edit"]
    answer = client.post("/v1/comparisons", json={**EDIT, "models": models}, headers=auth(key))
    # then one job per model is queued, in the order asked, priced per model
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert answer.headers["Location"] == f"/v1/comparisons/{body['id']}"
    assert body["status"] == "running" and body["vote"] is None
    assert [r["model"] for r in body["results"]] == models
    assert [r["status"] for r in body["results"]] == ["queued"] * 3
    assert [r["cost"]["estimated"] for r in body["results"]] == ["0.02", "0.04", "0.042"]
    assert body["estimated_total"] == "0.102" and body["actual_total"] is None
    # and the jobs share one stored input, and say which comparison made them
    with session_scope(settings.database_url) as session:
        rows = list(session.scalars(select(Job).where(Job.comparison_id == body["id"])))
    assert len(rows) == 3 and len({tuple(j.input_keys) for j in rows}) == 1
    # and GET /v1/jobs finds them by comparison
    listed = client.get("/v1/jobs", params={"comparison_id": body["id"]}, headers=auth(key))
    assert sorted(j["model"] for j in listed.json()["data"]) == sorted(models)
    assert {j["comparison_id"] for j in listed.json()["data"]} == {body["id"]}


def test_each_model_that_cannot_take_the_request_is_refused_with_its_own_reason(
        client: TestClient, settings: Settings) -> None:
    # given a tenant and a general edit
    key = key_for(settings, "cmp-refused")
    # when it compares a model that serves it with one that does not serve the operation,
    # one that does not exist, and one that takes no such option
    body = {**EDIT, "options": {"guidance_scale": 3},
            "models": ["step1x-edit", "stability-upscale-fast", "no-such-model", "qwen-edit"]}
    answer = client.post("/v1/comparisons", json=body, headers=auth(key))
    # then the comparison is refused, each failing model with its own code
    problem = assert_problem(answer, 422, "models_refused")
    assert {r["model"]: r["code"] for r in problem["refusals"]} == {
        "stability-upscale-fast": "unsupported_operation", "no-such-model": "unknown_model",
        "qwen-edit": "unsupported_option"}
    # and nothing was stored
    assert stored(settings, "cmp-refused") == (0, 0)


@pytest.mark.parametrize("models,why", [(["qwen-edit"], "2 to 6"),
                                        (["qwen-edit", "qwen-edit"], "once"),
                                        (["", "qwen-edit"], "by its id"),
                                        ([f"m{n}" for n in range(7)], "2 to 6")])
def test_two_to_six_distinct_models(client: TestClient, settings: Settings,
                                    models: list[str], why: str) -> None:
    key = key_for(settings, f"cmp-count-{uuid.uuid4().hex[:8]}")
    answer = client.post("/v1/comparisons", json={**EDIT, "models": models}, headers=auth(key))
    problem = assert_problem(answer, 422, "invalid_input")
    assert why in problem["detail"] and problem["field"] == "models"


def test_the_total_is_admitted_against_the_budget_at_once(
        client: TestClient, settings: Settings) -> None:
    # given a tenant with 0.09 USD a month: room for each model alone, not for both
    key = key_for(settings, "cmp-budget", monthly_budget=Decimal("0.09"))
    body = {**EDIT, "models": ["qwen-edit", "flux-kontext-max"]}  # 0.02 + 0.08
    # when it compares them
    answer = client.post("/v1/comparisons", json=body, headers=auth(key))
    # then the whole comparison is refused with 402, and nothing is stored
    problem = assert_problem(answer, 402, "budget_exceeded")
    assert problem["estimate"] == "0.1"
    assert stored(settings, "cmp-budget") == (0, 0)
    # and a comparison that fits is accepted
    ok = client.post("/v1/comparisons", json={**EDIT, "models": ["qwen-edit", "seededit-v3"]},
                     headers=auth(key))
    assert ok.status_code == 202, ok.text


def test_idempotency_key_replays_the_same_comparison(
        client: TestClient, settings: Settings) -> None:
    key = key_for(settings, "cmp-idem")
    body = {**EDIT, "models": ["qwen-edit", "flux-kontext-pro"]}
    headers = {**auth(key), "Idempotency-Key": "cmp-1"}
    # when the same request is sent twice with one key
    first = client.post("/v1/comparisons", json=body, headers=headers)
    again = client.post("/v1/comparisons", json=body, headers=headers)
    # then one comparison and two jobs exist, and the second answer says it is a replay
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert stored(settings, "cmp-idem") == (1, 2)
    # and the key with another request is refused
    other = client.post("/v1/comparisons", json={**body, "prompt": "other"}, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")


def test_votes_are_one_per_comparison_and_can_change(
        client: TestClient, settings: Settings) -> None:
    key = key_for(settings, "cmp-vote")
    made = client.post("/v1/comparisons", json={**EDIT, "models": ["qwen-edit", "seededit-v3"]},
                       headers=auth(key)).json()
    url = f"/v1/comparisons/{made['id']}/vote"
    # given its jobs still queued, there is no output to prefer yet
    assert_problem(client.post(url, json={"model": "qwen-edit"}, headers=auth(key)),
                   409, "conflict")
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.comparison_id == made["id"])
                        .values(status="succeeded"))
        session.commit()
    # when the user votes for one model, then for the other
    first = client.post(url, json={"model": "qwen-edit"}, headers=auth(key))
    assert first.status_code == 200, first.text
    assert first.json()["vote"]["model"] == "qwen-edit"
    second = client.post(url, json={"model": "seededit-v3"}, headers=auth(key))
    # then the vote moved, and one vote is counted
    assert second.json()["vote"]["model"] == "seededit-v3"
    assert client.get(f"/v1/comparisons/{made['id']}",
                      headers=auth(key)).json()["vote"]["model"] == "seededit-v3"
    # and a model outside the comparison cannot be voted for
    assert_problem(client.post(url, json={"model": "flux-kontext-max"}, headers=auth(key)),
                   422, "invalid_input")


def test_comparisons_are_private_to_their_tenant(
        client: TestClient, settings: Settings) -> None:
    owner, other = key_for(settings, "cmp-owner"), key_for(settings, "cmp-other")
    made = client.post("/v1/comparisons", json={**EDIT, "models": ["qwen-edit", "seededit-v3"]},
                       headers=auth(owner)).json()
    # another tenant can neither read, vote on nor list it
    assert_problem(client.get(f"/v1/comparisons/{made['id']}", headers=auth(other)),
                   404, "not_found")
    assert_problem(client.post(f"/v1/comparisons/{made['id']}/vote",
                               json={"model": "qwen-edit"}, headers=auth(other)),
                   404, "not_found")
    assert client.get("/v1/comparisons", headers=auth(other)).json()["data"] == []
    # and its owner lists it, newest first, with a cursor
    second = client.post("/v1/comparisons",
                         json={**EDIT, "models": ["qwen-edit", "flux-kontext-pro"]},
                         headers=auth(owner)).json()
    page = client.get("/v1/comparisons", params={"limit": 1}, headers=auth(owner)).json()
    assert [c["id"] for c in page["data"]] == [second["id"]]
    rest = client.get("/v1/comparisons", params={"cursor": page["next_cursor"]},
                      headers=auth(owner)).json()
    assert [c["id"] for c in rest["data"]] == [made["id"]]


def test_a_comparison_names_its_models_not_a_model(
        client: TestClient, settings: Settings) -> None:
    key = key_for(settings, "cmp-model")
    answer = client.post("/v1/comparisons",
                         json={**EDIT, "model": "qwen-edit", "models": ["a", "b"]},
                         headers=auth(key))
    assert assert_problem(answer, 422, "invalid_input")["field"] == "model"
    multipart = client.post("/v1/comparisons", headers=auth(key), files={
        "image": ("a.png", image_bytes((64, 64)), "image/png")},
        data={"prompt": "purple sky", "models": "qwen-edit, seededit-v3"})
    assert multipart.status_code == 202, multipart.text
    assert multipart.json()["models"] == ["qwen-edit", "seededit-v3"]
