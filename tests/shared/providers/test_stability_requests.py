"""Stability's multipart forms and answers, one function at a time (HTTP faked here;
the real exchange is tested against the simulator in tests/integration)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from shared.errors import ProviderError, ProviderOutcomeUnknown
from shared.jobs.submission import validate_edit
from shared.providers.router import build_options
from shared.providers.stability import StabilityEditProvider, build_form
from shared.providers.stability_client import StabilityClient
from shared.services import Services
from tests.conftest import make_settings
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(30)

SETTINGS = make_settings(database_url="sqlite://", stability_api_key="sk-test")
SERVICES = Services(SETTINGS)


def form(model: str, images: int = 1, mask: bool = False, prompt: str | None = None,
         negative: str | None = None, **options: Any) -> tuple[dict[str, str], list[Any]]:
    spec = SERVICES.catalog.get(model)
    opts = build_options(images=[image_bytes((128 + n, 128)) for n in range(images)],
                         operation=spec.operations[0], model=model, prompt=prompt,
                         mask=image_bytes((128, 128)) if mask else None,
                         negative_prompt=negative, options=options)
    return build_form(validate_edit(opts, SERVICES), opts)


def test_inpaint_form_has_image_mask_prompt_and_text_options() -> None:
    fields, files = form("stability-inpaint", mask=True, prompt="a cat", negative="blur",
                         grow_mask=10, seed=7, style_preset="anime")
    assert fields == {"prompt": "a cat", "negative_prompt": "blur", "grow_mask": "10",
                      "seed": "7", "style_preset": "anime"}
    assert [name for name, _ in files] == ["image", "mask"]
    assert files[0][1][2] == "image/png" and files[0][1][1] == image_bytes((128, 128))


def test_relight_maps_images_to_subject_then_references_and_bools_to_text() -> None:
    fields, files = form("stability-relight", images=3, keep_original_background=True,
                         light_source_direction="above")
    assert [name for name, _ in files] == ["subject_image", "background_reference",
                                           "light_reference"]
    assert fields == {"keep_original_background": "true", "light_source_direction": "above"}


def test_outpaint_directions_travel_as_form_fields() -> None:
    fields, _ = form("stability-outpaint", left=100, down=50, creativity=0.4)
    assert fields == {"left": "100", "down": "50", "creativity": "0.4"}


def client_answering(handler: Any) -> StabilityClient:
    client = StabilityClient("http://stability.test", "sk-test")
    client.http = httpx.Client(base_url="http://stability.test",
                               transport=httpx.MockTransport(handler))
    return client


def test_image_answer_reads_finish_reason_and_seed_headers() -> None:
    png = image_bytes()
    client = client_answering(lambda r: httpx.Response(
        200, content=png, headers={"content-type": "image/png", "finish-reason": "SUCCESS",
                                   "seed": "42"}))
    artifact = client.submit("edit/erase", {}, [])
    assert not isinstance(artifact, str)
    assert (artifact.data, artifact.finish_reason, artifact.seed) == (png, "SUCCESS", "42")


def test_json_answer_and_async_id() -> None:
    png = image_bytes()
    body = {"image": base64.b64encode(png).decode(), "finish_reason": "CONTENT_FILTERED",
            "seed": 3}
    artifact = client_answering(lambda r: httpx.Response(200, json=body)).submit("x", {}, [])
    assert not isinstance(artifact, str) and artifact.finish_reason == "CONTENT_FILTERED"
    rid = "a" * 64
    assert client_answering(lambda r: httpx.Response(200, json={"id": rid})).submit(
        "upscale/creative", {}, []) == rid


@pytest.mark.parametrize(("status", "name", "code", "retryable"), [
    (403, "content_moderation", "content_moderated", False),
    (400, "bad_request", "provider_invalid_request", False),
    (413, "payload_too_large", "provider_request_too_large", False),
    (429, "rate_limit_exceeded", "provider_rate_limited", True),
    (500, "internal_error", "provider_internal_error", True),
])
def test_error_bodies_are_classified(status: int, name: str, code: str,
                                     retryable: bool) -> None:
    client = client_answering(lambda r: httpx.Response(
        status, json={"id": "e1", "name": name, "errors": ["it went wrong"]},
        headers={"retry-after": "60"} if status == 429 else {}))
    with pytest.raises(ProviderError) as info:
        client.submit("edit/erase", {}, [])
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert "it went wrong" in info.value.message
    if status == 429:
        assert info.value.retry_after == 60


def test_a_dropped_answer_is_an_unknown_outcome() -> None:
    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    with pytest.raises(ProviderOutcomeUnknown):
        client_answering(drop).submit("edit/erase", {}, [])


def test_filtered_result_is_success_or_failure_by_setting() -> None:
    from shared.providers.stability_client import Artifact

    spec = SERVICES.catalog.get("stability-erase")
    filtered = Artifact(image_bytes(), "image/png", "CONTENT_FILTERED", "1")
    keep = StabilityEditProvider(client_answering(lambda r: httpx.Response(500)),
                                 filtered_is_success=True, look_interval=10)
    assert keep._result(spec, filtered, None).metadata["content_filtered"] is True
    strict = StabilityEditProvider(client_answering(lambda r: httpx.Response(500)),
                                   filtered_is_success=False, look_interval=10)
    with pytest.raises(ProviderError) as info:
        strict._result(spec, filtered, None)
    assert info.value.code == "content_filtered" and not info.value.retryable
    assert json.dumps(info.value.extra)  # what the job records stays serializable
