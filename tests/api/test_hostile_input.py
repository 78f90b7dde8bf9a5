"""Inputs that once answered 500, or were accepted when they should not have been: each
is now a 4xx problem with a stable code. In-process over real databases and S3."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from shared.config import Settings
from tests.api.test_jobs_api import assert_problem, auth
from tests.conftest import make_settings
from tests.helpers import b64, image_bytes

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


class TestDates:
    def test_a_date_without_a_timezone_is_its_first_instant_in_utc(
            self, client: TestClient, tenant_key: str) -> None:
        made = client.post("/v1/jobs", json={"image": b64(image_bytes()),
                                             "operation": "grayscale"},
                           headers=auth(tenant_key)).json()
        day = made["created_at"][:10]
        listed = client.get("/v1/jobs", params={"created_after": day},
                            headers=auth(tenant_key))
        assert listed.status_code == 200, listed.text
        assert [j["id"] for j in listed.json()["data"]] == [made["id"]]
        before = client.get("/v1/jobs", params={"created_before": day},
                            headers=auth(tenant_key)).json()["data"]
        assert before == []

    @pytest.mark.parametrize("value", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
    @pytest.mark.parametrize("path,name", [("/v1/jobs", "created_after"),
                                           ("/v1/jobs", "created_before"),
                                           ("/v1/costs", "from"), ("/v1/costs", "to")])
    def test_a_date_utc_cannot_express_is_a_422(self, client: TestClient, tenant_key: str,
                                                path: str, name: str, value: str) -> None:
        problem = assert_problem(client.get(path, params={name: value},
                                            headers=auth(tenant_key)), 422, "invalid_input")
        assert problem["field"] == name

    def test_a_reprocess_filter_date_utc_cannot_express_is_a_422(
            self, client: TestClient, tenant_key: str) -> None:
        answer = client.post("/v1/batches", headers=auth(tenant_key), json={"reprocess": {
            "filter": {"created_after": "9999-12-31T23:59:59-05:00"},
            "override": {"model": "qwen-edit"}}})
        assert assert_problem(answer, 422, "invalid_input")["field"] == "filter.created_after"


class TestNumbers:
    def test_a_4000_digit_integer_option_is_a_422(self, client: TestClient,
                                                  tenant_key: str) -> None:
        digits = "9" * 4000
        body = (f'{{"image": "{b64(image_bytes())}", "operation": "rotate", '
                f'"options": {{"angle": {digits}}}}}')
        answer = client.post("/v1/jobs", content=body, headers={
            **auth(tenant_key), "content-type": "application/json"})
        assert answer.status_code == 422, answer.text

    @pytest.mark.parametrize("value", ["²", "١٢", "1" * 40])
    def test_a_multipart_number_that_is_not_ascii_digits_is_a_422(
            self, client: TestClient, tenant_key: str, value: str) -> None:
        answer = client.post("/v1/jobs", headers=auth(tenant_key),
                             files={"image": ("a.png", image_bytes(), "image/png")},
                             data={"operation": "grayscale", "deadline_seconds": value})
        assert assert_problem(answer, 422, "invalid_input")["field"] == "deadline_seconds"


class TestMediaTypesAndQueries:
    @pytest.mark.parametrize("path", ["/v1/jobs", "/v1/quotes", "/v1/comparisons",
                                      "/v1/batches"])
    def test_a_media_type_that_only_starts_like_json_is_a_415(
            self, client: TestClient, tenant_key: str, path: str) -> None:
        answer = client.post(path, content=b"{}", headers={
            **auth(tenant_key), "content-type": "application/jsonfoo"})
        assert_problem(answer, 415, "unsupported_media_type")

    @pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches", "/v1/comparisons",
                                      "/v1/webhook-deliveries", "/v1/costs"])
    def test_an_unknown_query_parameter_is_refused_by_name(
            self, client: TestClient, tenant_key: str, path: str) -> None:
        answer = client.get(path, params={"batch": "b"},
                            headers=auth(tenant_key))
        problem = assert_problem(answer, 422, "unknown_query_parameter")
        assert problem["unknown"] == ["batch"] and "batch" in problem["detail"]


class TestImages:
    def test_a_truncated_jpeg_declaring_6000x6000_is_refused_at_submit(
            self, client: TestClient, tenant_key: str) -> None:
        buf = io.BytesIO()
        Image.effect_noise((6000, 6000), 50).convert("RGB").save(buf, "JPEG", quality=50)
        data = buf.getvalue()
        answer = client.post("/v1/jobs", headers=auth(tenant_key),
                             files={"image": ("a.jpg", data[: len(data) // 3], "image/jpeg")},
                             data={"operation": "grayscale"})
        assert_problem(answer, 422, "invalid_image")

    def test_a_malformed_json_body_is_a_422_not_a_400(
            self, client: TestClient, tenant_key: str) -> None:
        answer = client.post("/v1/comparisons/cmp_x/vote", content=b"\x93{",
                             headers={**auth(tenant_key), "content-type": "application/json"})
        assert_problem(answer, 422, "invalid_json")
