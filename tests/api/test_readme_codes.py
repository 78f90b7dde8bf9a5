"""The README's table of error codes is a promise: this test reads it and provokes each code
it lists, in-process, over a real database and S3, and checks the status and code the API
answers. A code only a live server or worker can produce names the test that shows it."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from cli.stack import free_port
from shared.config import Settings
from tests.api.test_jobs_api import auth
from tests.api.test_quotes_api import key_for
from tests.conftest import make_settings
from tests.helpers import b64, image_bytes

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parents[2] / "README.md"
TESTS = Path(__file__).resolve().parents[1]


def readme_codes() -> list[tuple[int, str]]:
    """(status, code) for every code in the table under "Error codes of `POST /v1/jobs`"."""
    text = README.read_text()
    start = text.index("Error codes of `POST /v1/jobs`")
    rows: list[tuple[int, str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows += [(int(cells[0]), code) for code in re.findall(r"`([a-z_]+)`", cells[1])]
    return rows


@pytest.fixture
def settings(database_url: str, s3_url: str, bucket: str) -> Settings:
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url, s3_bucket=bucket,
                         wavespeed_api_key="unused", stability_api_key="unused",
                         max_image_bytes=64 * 1024, plan_limits={"none": 0, "unlimited": None})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


PNG = b64(image_bytes((96, 96)))
Post = Callable[..., httpx.Response]


def noisy_png(side: int) -> bytes:
    """A PNG that does not compress, to pass a byte cap with few pixels."""
    import os

    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


def provokers(client: TestClient, settings: Settings) -> dict[str, Callable[[], Any]]:
    """For each code, a request that should be answered with it."""
    key = key_for(settings, f"readme-{free_port()}")

    def job(headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        return client.post("/v1/jobs", json={"image": PNG, **body},
                           headers={**auth(key), **(headers or {})})

    def reused() -> httpx.Response:
        same = {"Idempotency-Key": "readme-reused"}
        assert job(same, operation="grayscale").status_code == 202
        return job(same, operation="invert")

    def other_app(body: dict[str, Any], **change: Any) -> Callable[[], httpx.Response]:
        """The request, sent to an app whose settings differ by `change`."""
        def send() -> httpx.Response:
            with TestClient(create_app(Settings(**{**settings.model_dump(), **change}))) as app:
                return app.post("/v1/jobs", json={"image": PNG, **body}, headers=auth(key))
        return send

    grayscale = {"operation": "grayscale"}

    def over_budget() -> httpx.Response:
        poor = key_for(settings, f"readme-poor-{free_port()}", monthly_budget=Decimal("0.01"))
        return client.post("/v1/jobs", json={"image": PNG, "model": "gpt-image-1-edit",
                                             "prompt": "blue"}, headers=auth(poor))

    def past_plan() -> httpx.Response:
        capped = key_for(settings, f"readme-plan-{free_port()}", plan="none")
        return client.post("/v1/jobs", json={"image": PNG, "operation": "grayscale"},
                           headers=auth(capped))

    return {
        "unauthorized": lambda: client.post("/v1/jobs", json={"image": PNG}),
        "image_too_large": lambda: job(image=b64(noisy_png(160)), operation="grayscale"),
        "request_too_large": lambda: client.post(
            "/v1/jobs", content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
            headers={**auth(key), "Content-Type": "application/json"}),
        "input_refused": lambda: job(image="http://127.0.0.1/in.png", operation="grayscale"),
        "unsupported_media_type": lambda: client.post(
            "/v1/jobs", content=b"image", headers={**auth(key), "Content-Type": "text/plain"}),
        "invalid_image": lambda: job(image="not base64 at all!", operation="grayscale"),
        "unsupported_image_format": lambda: job(image=b64(gif()), operation="grayscale"),
        "unknown_model": lambda: job(model="no-such-model", operation="grayscale"),
        "unsupported_operation": lambda: job(model="local-pillow", operation="inpaint"),
        "prompt_required": lambda: job(model="qwen-edit"),
        "unsupported_option": lambda: job(model="local-pillow", operation="grayscale",
                                          negative_prompt="no"),
        "image_out_of_limits": lambda: job(image=b64(image_bytes((32, 32))),
                                           model="stability-erase"),
        "missing_option": lambda: job(model="stability-search-replace", prompt="a cat"),
        "mask_required": lambda: job(model="stability-inpaint", prompt="a cat"),
        "invalid_input": lambda: job(operation="grayscale", options={"strength": "lots"},
                                     color="blue"),
        "idempotency_key_reused": reused,
        "invalid_json": lambda: client.post(
            "/v1/jobs", content=b'{"image": ', headers={**auth(key),
                                                        "Content-Type": "application/json"}),
        "invalid_multipart": lambda: client.post(
            "/v1/jobs", content=b"--x\r\n",
            headers={**auth(key), "Content-Type": "multipart/form-data"}),
        "unknown_query_parameter": lambda: client.post(
            "/v1/jobs?colour=blue", json={"image": PNG, "operation": "grayscale"},
            headers=auth(key)),
        "models_refused": lambda: client.post(
            "/v1/comparisons", json={"image": PNG, "prompt": "blue",
                                     "models": ["qwen-edit", "no-such-model"]},
            headers=auth(key)),
        "webhook_url_not_allowed": lambda: job(operation="grayscale",
                                               webhook_url="http://169.254.169.254/hook"),
        "budget_exceeded": over_budget,
        "plan_limit_exceeded": past_plan,
        "provider_not_configured": other_app({"model": "qwen-edit", "prompt": "blue"},
                                             wavespeed_api_key=None),
        "database_unavailable": other_app(
            grayscale, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/gone"),
        "storage_unavailable": other_app(grayscale,
                                         s3_endpoint_url=f"http://127.0.0.1:{free_port()}"),
    }


# Codes that need a live server (the head is read before the app sees it) or a worker (the
# job fails with it): the test named shows each, against its status.
ELSEWHERE = {
    "header_too_large": "api/test_request_heads.py",
    "too_many_headers": "api/test_request_heads.py",
    "header_timeout": "api/test_request_heads.py",
    "input_unreachable": "integration/test_inputs_by_reference.py",
}


def test_the_table_is_read() -> None:
    codes = readme_codes()
    assert len(codes) >= 30 and codes[0] == (401, "unauthorized")


@pytest.mark.parametrize(("status", "code"), readme_codes(), ids=lambda v: str(v))
def test_each_readme_code_is_what_the_api_answers(
        client: TestClient, settings: Settings, status: int, code: str) -> None:
    if code in ELSEWHERE:
        # then the test that shows it asserts this very code
        assert f'"{code}"' in (TESTS / ELSEWHERE[code]).read_text()
        return
    # given a request the table says is refused with this code
    provoke = provokers(client, settings).get(code)
    assert provoke is not None, f"no request provokes {code}; add one or drop it from README"
    # when it is sent
    answer = provoke()
    # then the API answers with the table's status and code, as a problem
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == code, answer.text
