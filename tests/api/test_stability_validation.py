"""Stability's rules are checked before any call: each one answers its exact status and code.

In-process API over a real database and S3 (no worker): a refused request
leaves nothing behind, an accepted one is queued for the right operation.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from shared.config import Settings
from tests.api.test_jobs_api import assert_problem, auth
from tests.helpers import b64, image_bytes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    configured = Settings(**{**settings.model_dump(), "stability_api_key": "sk-test",
                             "max_image_bytes": 20 * 1024 * 1024})
    with TestClient(create_app(configured)) as client:
        yield client


def png(size: tuple[int, int] = (256, 256), mode: str = "RGB") -> str:
    color = (200, 30, 30, 0) if mode == "RGBA" else (200, 30, 30)
    return b64(image_bytes(size, mode=mode, color=color))


def submit(client: TestClient, key: str, **body: Any) -> Any:
    body.setdefault("image", png())
    return client.post("/v1/jobs", json=body, headers=auth(key))


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("inpaint with a mask", {"operation": "inpaint", "prompt": "a cat", "mask": png()}),
    ("inpaint with alpha", {"operation": "inpaint", "prompt": "a cat",
                            "image": png(mode="RGBA")}),
    ("erase with alpha", {"operation": "erase", "image": png(mode="RGBA")}),
    ("outpaint left", {"operation": "outpaint", "options": {"left": 100}}),
    ("search_replace", {"operation": "search_replace", "prompt": "a dog",
                        "options": {"search_prompt": "cat"}}),
    ("search_recolor", {"operation": "search_recolor", "prompt": "red",
                        "options": {"select_prompt": "car"}}),
    ("remove_background", {"operation": "remove_background",
                           "options": {"output_format": "webp"}}),
    ("relight by prompt", {"operation": "relight",
                           "options": {"background_prompt": "a beach at dusk"}}),
    ("relight by reference", {"operation": "relight", "image": None,
                              "images": [png(), png((300, 200))]}),
    ("upscale_fast", {"operation": "upscale_fast", "image": png((512, 512))}),
    ("upscale_conservative", {"operation": "upscale_conservative", "prompt": "sharp"}),
    ("upscale_creative", {"operation": "upscale_creative", "prompt": "detailed",
                          "options": {"creativity": 0.3}}),
]


@pytest.mark.parametrize(("name", "body"), ACCEPTED, ids=[n for n, _ in ACCEPTED])
def test_valid_requests_go_to_the_operations_default_stability_model(
        client: TestClient, tenant_key: str, name: str, body: dict[str, Any]) -> None:
    response = submit(client, tenant_key, **body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["provider"] == "stability"
    assert job["model"] == "stability-" + body["operation"].replace("_", "-")


def noise_png(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.effect_noise(size, 90).convert("RGB").save(buf, "PNG", compress_level=0)
    return b64(buf.getvalue())


REFUSED: list[tuple[str, dict[str, Any], int, str]] = [
    ("inpaint without mask or alpha", {"operation": "inpaint", "prompt": "x"}, 422,
     "mask_required"),
    ("erase without mask or alpha", {"operation": "erase"}, 422, "mask_required"),
    ("outpaint without direction", {"operation": "outpaint"}, 422, "missing_option"),
    ("outpaint with only zeros", {"operation": "outpaint", "options": {"left": 0, "up": 0}},
     422, "missing_option"),
    ("outpaint direction too far", {"operation": "outpaint", "options": {"left": 2001}}, 422,
     "invalid_input"),
    ("search_replace without search_prompt", {"operation": "search_replace", "prompt": "x"},
     422, "missing_option"),
    ("search_recolor without select_prompt", {"operation": "search_recolor", "prompt": "x"},
     422, "missing_option"),
    ("relight without background", {"operation": "relight"}, 422, "missing_option"),
    ("remove_background as jpeg", {"operation": "remove_background",
                                   "options": {"output_format": "jpeg"}}, 422,
     "invalid_input"),
    ("inpaint side under 64", {"operation": "inpaint", "prompt": "x", "mask": png((48, 48)),
                               "image": png((48, 200))}, 422, "image_out_of_limits"),
    ("outpaint aspect over 2.5", {"operation": "outpaint", "options": {"left": 10},
                                  "image": png((660, 256))}, 422, "image_out_of_limits"),
    ("search_replace aspect under 1:2.5", {"operation": "search_replace", "prompt": "x",
                                           "options": {"search_prompt": "y"},
                                           "image": png((100, 300))}, 422,
     "image_out_of_limits"),
    ("upscale_fast side over 1536", {"operation": "upscale_fast", "image": png((1600, 64))},
     422, "image_out_of_limits"),
    ("upscale_fast side under 32", {"operation": "upscale_fast", "image": png((31, 64))}, 422,
     "image_out_of_limits"),
    ("upscale_creative over 1,048,576 px", {"operation": "upscale_creative", "prompt": "x",
                                            "image": png((1100, 1000))}, 422,
     "image_out_of_limits"),
    ("remove_background over 4,194,304 px", {"operation": "remove_background",
                                             "image": png((2100, 2100))}, 422,
     "image_out_of_limits"),
    ("upscale_conservative without prompt", {"operation": "upscale_conservative"}, 422,
     "prompt_required"),
    ("erase takes no prompt", {"operation": "erase", "prompt": "x",
                               "image": png(mode="RGBA")}, 422, "unsupported_option"),
    ("unknown option", {"operation": "erase", "image": png(mode="RGBA"),
                        "options": {"strength": 1}}, 422, "unsupported_option"),
    ("bad style preset", {"operation": "inpaint", "prompt": "x", "mask": png(),
                          "options": {"style_preset": "oil"}}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), REFUSED,
                         ids=[r[0] for r in REFUSED])
def test_rule_refuses_with_its_status_and_code(client: TestClient, tenant_key: str, name: str,
                                               body: dict[str, Any], status: int,
                                               code: str) -> None:
    problem = assert_problem(submit(client, tenant_key, **body), status, code)
    assert "stability" in problem["detail"] or problem.get("model", "").startswith("stability")
    assert client.get("/v1/jobs", headers=auth(tenant_key)).json()["data"] == []


def test_request_over_stabilitys_10_mib_is_refused_before_any_call(
        client: TestClient, tenant_key: str) -> None:
    # given an image of about 10.4 MiB (within editq's own 20 MiB limit here)
    big = noise_png((2000, 1820))
    problem = assert_problem(submit(client, tenant_key, operation="inpaint", prompt="x",
                                    image=big, mask=png((2000, 1820))), 422,
                             "image_out_of_limits")
    assert "10,485,760" in problem["detail"]


def test_recommendations_include_stability_operations(client: TestClient,
                                                     tenant_key: str) -> None:
    ranked = client.get("/v1/models?operation=inpaint",
                        headers=auth(tenant_key)).json()["data"]
    assert {m["provider"] for m in ranked} >= {"stability", "wavespeed"}
    assert ranked[0]["id"] == "z-image-turbo-inpaint"  # 0.02 beats Stability's 0.05
    assert any(m["id"] == "stability-inpaint" for m in ranked)


@pytest.mark.parametrize(("model", "body", "operation"), [
    ("stability-inpaint", {"prompt": "a cat", "mask": png()}, "inpaint"),
    ("stability-erase", {"image": png(mode="RGBA")}, "erase"),
    ("stability-upscale-fast", {"image": png((512, 512))}, "upscale_fast"),
])
def test_a_single_operation_model_needs_no_operation(
        client: TestClient, tenant_key: str, model: str, body: dict[str, Any],
        operation: str) -> None:
    # given a model that serves one operation, named without one
    answer = submit(client, tenant_key, model=model, **body)
    # then the job takes the model's only operation
    assert answer.status_code == 202, answer.text
    assert answer.json()["operation"] == operation
    # while a model of many operations, without one, still means a general edit
    many = submit(client, tenant_key, model="local-pillow")
    assert "general_edit" in assert_problem(many, 422, "prompt_required")["detail"]
