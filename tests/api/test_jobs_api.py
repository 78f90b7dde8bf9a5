"""The jobs API in-process (TestClient) over a real database and a real S3 server.

No worker runs here, so jobs stay queued: these tests are about what the API
accepts, refuses, stores and shows. The full trip is in tests/integration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from shared.config import Settings
from shared.storage import Storage, input_key
from tests.helpers import b64, image_bytes, tenant_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_job(client: TestClient, key: str, headers: dict[str, str] | None = None,
             **body: Any) -> Any:
    body.setdefault("image", b64(image_bytes()))
    body.setdefault("operation", "grayscale")
    return client.post("/v1/jobs", json=body, headers={**auth(key), **(headers or {})})


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["detail"]
    return problem


class TestSubmit:
    def test_json_submission_is_accepted_queued_and_its_input_stored(
            self, client: TestClient, tenant_key: str, storage: Storage,
            settings: Settings) -> None:
        # given a PNG image
        data = image_bytes((80, 60))
        # when it is submitted as JSON
        response = post_job(client, tenant_key, image=b64(data), metadata={"ref": "a1"})
        # then the job is queued with the catalog's default model for the operation
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued"
        assert job["model"] == "local-pillow" and job["provider"] == "local"
        assert job["metadata"] == {"ref": "a1"}
        assert job["cost"] == {"estimated": "0", "actual": None, "currency": "USD"}
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        # and the input is in S3 under its tenant and its sha256
        import hashlib

        tenant_id = tenant_of(settings.database_url, tenant_key)
        assert storage.get(input_key(tenant_id, hashlib.sha256(data).hexdigest())) == data

    def test_data_uri_and_multipart_are_accepted(self, client: TestClient,
                                                 tenant_key: str) -> None:
        data = image_bytes(fmt="JPEG")
        as_uri = post_job(client, tenant_key, image="data:image/jpeg;base64," + b64(data))
        assert as_uri.status_code == 202, as_uri.text
        multipart = client.post(
            "/v1/jobs", headers=auth(tenant_key),
            files={"image": ("in.jpg", data, "image/jpeg")},
            data={"operation": "rotate", "options": '{"angle": 180}'},
        )
        assert multipart.status_code == 202, multipart.text
        assert multipart.json()["operation"] == "rotate"
        assert multipart.json()["options"] == {"angle": 180}

    def test_missing_or_bad_key_is_401(self, client: TestClient) -> None:
        assert_problem(client.get("/v1/jobs"), 401, "unauthorized")
        assert_problem(client.get("/v1/jobs", headers=auth("eq_nope")), 401, "unauthorized")


class TestBadInput:
    """Every refusal is a 4xx problem with a stable code, never a 500."""

    @pytest.mark.parametrize(("body", "status", "code"), [
        ({"image": b64(b"not an image at all")}, 422, "invalid_image"),
        ({"image": "@@@not-base64@@@"}, 422, "invalid_image"),
        ({"image": b64(image_bytes(fmt="GIF", mode="P", color=(3,)))}, 422,
         "unsupported_image_format"),
        ({"image": b64(image_bytes(fmt="BMP"))}, 422, "unsupported_image_format"),
        ({"model": "no-such-model"}, 422, "unknown_model"),
        ({"operation": "inpaint", "model": "local-pillow"}, 422, "unsupported_operation"),
        ({"operation": "teleport"}, 422, "unsupported_operation"),
        ({"operation": "general_edit"}, 422, "prompt_required"),
        ({"operation": "general_edit", "prompt": "   "}, 422, "prompt_required"),
        ({"options": {"strength": 0.5}}, 422, "unsupported_option"),
        ({"operation": "blur", "options": {"radius": 500}}, 422, "invalid_input"),
        ({"operation": "rotate", "options": {"angle": "ninety"}}, 422, "invalid_input"),
        ({"mask": b64(image_bytes())}, 422, "unsupported_option"),
        ({"image": None}, 422, "invalid_input"),
        ({"colour": "red"}, 422, "invalid_input"),
    ], ids=["undecodable", "bad-base64", "gif", "bmp", "unknown-model", "op-not-in-model",
            "op-unknown", "no-prompt", "blank-prompt", "unknown-option", "out-of-range",
            "wrong-type", "mask-not-taken", "no-image", "unknown-field"])
    def test_refused_with_code(self, client: TestClient, tenant_key: str,
                               body: dict[str, Any], status: int, code: str) -> None:
        problem = assert_problem(post_job(client, tenant_key, **body), status, code)
        assert problem["type"].endswith(code)

    def test_too_many_bytes_is_413(self, client: TestClient, settings: Settings,
                                   tenant_key: str) -> None:
        big = Settings(**{**settings.model_dump(), "max_image_bytes": 2048})
        with TestClient(create_app(big)) as small_client:
            noisy = Image.effect_noise((200, 200), 80).convert("RGB")
            import io

            buf = io.BytesIO()
            noisy.save(buf, "PNG")
            assert len(buf.getvalue()) > 2048
            problem = assert_problem(post_job(small_client, tenant_key, image=b64(buf.getvalue())),
                                     413, "image_too_large")
            assert problem["limit"] == 2048
            # and the size it states is the image's own, as JSON and as a multipart file
            assert problem["bytes"] == len(buf.getvalue())
            assert f"{len(buf.getvalue())} bytes" in problem["detail"]
            as_file = small_client.post(
                "/v1/jobs", headers=auth(tenant_key), data={"operation": "grayscale"},
                files={"image": ("big.png", buf.getvalue(), "image/png")})
            problem = assert_problem(as_file, 413, "image_too_large")
            assert problem["bytes"] == len(buf.getvalue()), problem
            assert f"{len(buf.getvalue())} bytes" in problem["detail"]

    def test_too_many_pixels_is_413_without_decoding(self, client: TestClient,
                                                     tenant_key: str) -> None:
        # given a 1-bit PNG of 100 megapixels: small on the wire, a bomb once decoded
        import io

        buf = io.BytesIO()
        Image.new("1", (10_000, 10_000)).save(buf, "PNG")
        problem = assert_problem(post_job(client, tenant_key, image=b64(buf.getvalue())),
                                 413, "image_too_large")
        assert problem["pixels"] == 100_000_000

    def test_body_over_the_limit_is_413_before_it_is_read(self, settings: Settings,
                                                          tenant_key: str) -> None:
        small = Settings(**{**settings.model_dump(), "max_image_bytes": 1024,
                            "max_images_per_job": 1})
        with TestClient(create_app(small)) as small_client:
            # 1024 * 4/3 * 2 + 1 MiB is the cap; send 2 MiB of JSON
            body = b'{"image": "' + b"A" * (2 * 1024 * 1024) + b'"}'
            response = small_client.post("/v1/jobs", content=body, headers={
                **auth(tenant_key), "Content-Type": "application/json"})
            assert_problem(response, 413, "request_too_large")

    def test_wrong_content_type_is_415(self, client: TestClient, tenant_key: str) -> None:
        response = client.post("/v1/jobs", content=b"image=1",
                               headers={**auth(tenant_key), "Content-Type": "text/plain"})
        assert_problem(response, 415, "unsupported_media_type")

    def test_multipart_with_text_instead_of_file(self, client: TestClient,
                                                 tenant_key: str) -> None:
        # (a None filename makes a plain form field, and forces multipart encoding)
        # (a text image field is a reference: a URL or an upload id, and "hello" is neither)
        response = client.post("/v1/jobs", headers=auth(tenant_key),
                               files={"image": (None, "hello"), "operation": (None, "grayscale")})
        assert "https://" in assert_problem(response, 422, "input_refused")["detail"]

    def test_multipart_refuses_an_unknown_field_by_name(self, client: TestClient,
                                                        tenant_key: str) -> None:
        # given a form with a mistyped field (as JSON refuses an unknown member)
        response = client.post("/v1/jobs", headers=auth(tenant_key),
                               data={"modle": "qwen-edit", "operation": "grayscale"},
                               files={"image": ("in.png", image_bytes(), "image/png")})
        # then it is refused by name, and no job runs on the default model
        problem = assert_problem(response, 422, "invalid_input")
        assert problem["field"] == "modle" and "modle" in problem["detail"]
        as_json = post_job(client, tenant_key, modle="qwen-edit")
        assert assert_problem(as_json, 422, "invalid_input")["field"] == "modle"

    def test_wait_above_limit_and_bad_cursor(self, client: TestClient,
                                             tenant_key: str) -> None:
        job = post_job(client, tenant_key).json()
        assert_problem(client.get(f"/v1/jobs/{job['id']}?wait=61", headers=auth(tenant_key)),
                       422, "invalid_input")
        bad = assert_problem(client.get("/v1/jobs?cursor=zzz", headers=auth(tenant_key)),
                             422, "invalid_input")
        assert bad["field"] == "cursor"


class TestTenantIsolation:
    def test_another_tenants_job_is_404_everywhere(self, client: TestClient, tenant_key: str,
                                                   settings: Settings) -> None:
        from shared.db import session_scope
        from shared.tenants import create_api_key

        with session_scope(settings.database_url) as session:
            other_key = create_api_key(session, "other-" + tenant_key[-8:])
        job = post_job(client, tenant_key).json()
        for method, path in [("GET", f"/v1/jobs/{job['id']}"),
                             ("GET", f"/v1/jobs/{job['id']}/events"),
                             ("POST", f"/v1/jobs/{job['id']}/cancel")]:
            assert_problem(client.request(method, path, headers=auth(other_key)), 404,
                           "not_found")
        listed = client.get("/v1/jobs", headers=auth(other_key)).json()
        assert job["id"] not in [j["id"] for j in listed["data"]]
        # and the owner still sees it, uncanceled
        assert client.get(f"/v1/jobs/{job['id']}",
                          headers=auth(tenant_key)).json()["status"] == "queued"


@pytest.mark.every_database
class TestIdempotency:
    def test_same_key_same_body_replays_the_job(self, client: TestClient,
                                                tenant_key: str) -> None:
        first = post_job(client, tenant_key, headers={"Idempotency-Key": "k-1"})
        second = post_job(client, tenant_key, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"
        listed = client.get("/v1/jobs", headers=auth(tenant_key)).json()["data"]
        assert len(listed) == 1

    def test_same_key_other_body_is_refused(self, client: TestClient, tenant_key: str) -> None:
        post_job(client, tenant_key, headers={"Idempotency-Key": "k-2"})
        other = post_job(client, tenant_key, headers={"Idempotency-Key": "k-2"},
                         operation="rotate")
        problem = assert_problem(other, 422, "idempotency_key_reused")
        assert problem["job_id"]

    def test_same_request_over_json_and_multipart_is_the_same_request(
            self, client: TestClient, tenant_key: str) -> None:
        data = image_bytes()
        first = post_job(client, tenant_key, image=b64(data),
                         headers={"Idempotency-Key": "k-3"})
        second = client.post("/v1/jobs", headers={**auth(tenant_key), "Idempotency-Key": "k-3"},
                             files={"image": ("a.png", data, "image/png")},
                             data={"operation": "grayscale"})
        assert second.status_code == 202, second.text
        assert second.json()["id"] == first.json()["id"]


class TestCancel:
    def test_queued_job_is_canceled_with_an_event(self, client: TestClient,
                                                  tenant_key: str) -> None:
        job = post_job(client, tenant_key).json()
        canceled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(tenant_key))
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
        assert canceled.json()["finished_at"]
        events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth(tenant_key)).json()
        assert [(e["type"], e["to_status"]) for e in events["data"]] == [
            ("created", "queued"), ("canceled", "canceled")]
        # a second cancel is a conflict, not a silent success
        assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(tenant_key)),
                       409, "job_not_cancelable")


class TestRetention:
    def test_a_job_says_how_long_it_keeps_its_images(self, client: TestClient,
                                                    tenant_key: str) -> None:
        # given a job that keeps its inputs a day and its outputs half a day
        job = post_job(client, tenant_key, retention={"inputs_days": 1, "outputs_days": 0.5})
        assert job.status_code == 202, job.text
        # then its view says so (until when: once it has ended)
        assert job.json()["retention"] == {"inputs_days": 1.0, "outputs_days": 0.5,
                                           "inputs_until": None, "outputs_until": None}
        # and a job that says nothing keeps the deployment's 30 days
        plain = post_job(client, tenant_key).json()
        assert plain["retention"]["outputs_days"] == 30.0

    @pytest.mark.parametrize("retention, field", [
        ({"outputs_days": -1}, "retention.outputs_days"),
        ({"outputs_days": "7"}, "retention.outputs_days"),
        ({"forever": True}, "retention")])
    def test_a_bad_retention_is_a_422_naming_it(self, client: TestClient, tenant_key: str,
                                                retention: dict[str, Any], field: str) -> None:
        problem = assert_problem(post_job(client, tenant_key, retention=retention), 422,
                                 "invalid_input")
        assert problem["field"] == field

    def test_the_data_of_a_job_not_ended_is_not_deleted(self, client: TestClient,
                                                        tenant_key: str) -> None:
        job = post_job(client, tenant_key).json()  # (no worker here: it stays queued)
        assert_problem(client.delete(f"/v1/jobs/{job['id']}/data", headers=auth(tenant_key)),
                       409, "not_ended")
        assert_problem(client.delete("/v1/jobs/job_nope/data", headers=auth(tenant_key)),
                       404, "not_found")


class TestReadAndList:
    def test_wait_returns_when_the_deadline_passes(self, client: TestClient,
                                                   tenant_key: str) -> None:
        import time

        job = post_job(client, tenant_key).json()
        started = time.monotonic()
        got = client.get(f"/v1/jobs/{job['id']}?wait=1", headers=auth(tenant_key)).json()
        assert got["status"] == "queued"
        # (at least the second asked for, and well short of the 60 s the server allows)
        assert 0.9 <= time.monotonic() - started < 30

    @pytest.mark.every_database
    def test_list_filters_and_paginates_without_gaps(self, client: TestClient,
                                                     tenant_key: str) -> None:
        ids = [post_job(client, tenant_key).json()["id"] for _ in range(5)]
        client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth(tenant_key))
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/jobs", params=params, headers=auth(tenant_key)).json()
            seen += [j["id"] for j in page["data"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        queued = client.get("/v1/jobs?status=queued", headers=auth(tenant_key)).json()["data"]
        assert sorted(j["id"] for j in queued) == sorted(ids[1:])
        none = client.get("/v1/jobs?model=other", headers=auth(tenant_key)).json()["data"]
        assert none == []

    @pytest.mark.every_database
    def test_list_filters_by_metadata_and_batch(self, client: TestClient,
                                                tenant_key: str) -> None:
        # given jobs told apart by their metadata
        red = post_job(client, tenant_key, metadata={"shoot": "red", "n": "1"}).json()["id"]
        post_job(client, tenant_key, metadata={"shoot": "blue", "n": "1"})
        post_job(client, tenant_key)

        def listed(params: dict[str, Any]) -> list[str]:
            answer = client.get("/v1/jobs", params=params, headers=auth(tenant_key))
            assert answer.status_code == 200, answer.text
            return [j["id"] for j in answer.json()["data"]]

        # when the list is filtered by metadata, every pair given must hold
        assert listed({"metadata": "shoot:red"}) == [red]
        assert listed({"metadata": ["shoot:red", "n:1"]}) == [red]
        assert listed({"metadata": ["shoot:red", "n:2"]}) == []
        assert len(listed({"metadata": "n:1"})) == 2
        # and by batch: none of these jobs came from one
        assert listed({"batch_id": "bat_none"}) == []
        # and a filter that is not key:value is refused, not ignored
        for bad_filter in ("shoot", 'a"b:1', "$.x:1"):
            bad = client.get("/v1/jobs", params={"metadata": bad_filter},
                             headers=auth(tenant_key))
            assert assert_problem(bad, 422, "invalid_input")["field"] == "metadata"


class TestMeta:
    def test_models_lists_the_catalog_with_prices(self, client: TestClient,
                                                  tenant_key: str) -> None:
        # (every /v1 call takes a key, this one too)
        assert_problem(client.get("/v1/models"), 401, "unauthorized")
        models = client.get("/v1/models", headers=auth(tenant_key)).json()["data"]
        local = next(m for m in models if m["id"] == "local-pillow")
        assert local["price_usd"] == "0" and local["pricing"]["rule"] == "flat"
        assert "grayscale" in local["operations"]
        ranked = client.get("/v1/models?operation=blur", headers=auth(tenant_key)).json()["data"]
        assert ranked[0]["rank"] == 1 and ranked[0]["reason"].startswith("cheapest")

    def test_health_and_readiness(self, client: TestClient) -> None:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}

    def test_storage_down_is_503_for_readiness_and_submission(self, settings: Settings,
                                                              tenant_key: str) -> None:
        # given an API whose S3 endpoint refuses connections
        from cli.stack import free_port

        down = Settings(**{**settings.model_dump(),
                           "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
        with TestClient(create_app(down)) as down_client:
            # then it still starts, says it is not ready, and refuses new jobs with a 503
            ready = down_client.get("/readyz")
            problem = assert_problem(ready, 503, "not_ready")
            assert problem["checks"]["storage"].startswith("error")
            assert problem["checks"]["database"] == "ok"
            assert_problem(post_job(down_client, tenant_key), 503, "storage_unavailable")
            # and no job was left behind half-made
            assert down_client.get("/v1/jobs", headers=auth(tenant_key)).json()["data"] == []

    def test_openapi_documents_both_request_bodies(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        content = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)
