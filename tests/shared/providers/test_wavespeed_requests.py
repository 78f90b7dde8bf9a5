"""Request building per model: editq's options land in each model's own fields."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shared.errors import InvalidInput, UnsupportedOption
from shared.jobs.submission import validate_edit
from shared.providers.router import build_options
from shared.providers.wavespeed import build_request
from shared.services import Services
from tests.conftest import make_settings
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(30)

SETTINGS = make_settings(database_url="sqlite://", wavespeed_api_key="sim-key",
                         wavespeed_base_url="http://127.0.0.1:9")
SERVICES = Services(SETTINGS)


def body_for(model: str, n_images: int = 1, mask: bool = False, prompt: str | None = "edit",
             operation: str | None = None, negative: str | None = None,
             **options: Any) -> dict[str, Any]:
    spec = SERVICES.catalog.get(model)
    opts = build_options(images=[image_bytes()] * n_images, operation=operation or
                         spec.operations[0], model=model, prompt=prompt,
                         mask=image_bytes() if mask else None, negative_prompt=negative,
                         options=options)
    spec = validate_edit(opts, SERVICES)
    return build_request(spec, opts)


def test_single_image_models_send_image_as_a_data_uri() -> None:
    body = body_for("flux-kontext-pro", guidance_scale=5, safety_tolerance="3")
    assert set(body) == {"prompt", "image", "guidance_scale", "safety_tolerance"}
    assert body["image"].startswith("data:image/png;base64,")
    assert base64.b64decode(body["image"].split(",", 1)[1]) == image_bytes()


def test_multi_image_models_send_images_list() -> None:
    body = body_for("qwen-edit-plus", n_images=3, operation="multi_image_edit")
    assert len(body["images"]) == 3 and "image" not in body


def test_width_and_height_become_size_w_star_h() -> None:
    body = body_for("qwen-edit", width=512, height=384, seed=7, output_format="png")
    assert body["size"] == "512*384" and body["seed"] == 7 and body["output_format"] == "png"
    assert "width" not in body and "height" not in body


def test_zoom_out_keeps_its_own_width_and_height_and_needs_no_prompt() -> None:
    body = body_for("image-zoom-out", prompt=None, width=1024, height=768)
    assert body == {"image": body["image"], "width": 1024, "height": 768}


def test_steps_alias_maps_to_num_inference_steps_and_negative_prompt_travels() -> None:
    body = body_for("step1x-edit", steps=20, negative="blurry")
    assert body["num_inference_steps"] == 20 and body["negative_prompt"] == "blurry"


def test_mask_goes_to_mask_image() -> None:
    body = body_for("z-image-turbo-inpaint", mask=True, strength=0.8)
    assert body["mask_image"].startswith("data:image/png;base64,")
    gpt = body_for("gpt-image-1-edit", mask=True, operation="inpaint", quality="high",
                   size="1024*1536")
    assert gpt["quality"] == "high" and gpt["size"] == "1024*1536" and "mask_image" in gpt


@pytest.mark.parametrize(("model", "options", "names"), [
    ("flux-kontext-pro", {"seed": 1}, "seed"),
    ("qwen-edit", {"guidance_scale": 2}, "guidance_scale"),
    ("seededit-v3", {"width": 512, "height": 512}, "width"),
    ("ideogram-character", {"quality": "high"}, "quality"),
])
def test_an_option_the_model_does_not_take_is_refused_by_name(
        model: str, options: dict[str, Any], names: str) -> None:
    with pytest.raises(UnsupportedOption) as info:
        body_for(model, **options)
    assert names in info.value.message and model in info.value.message


@pytest.mark.parametrize(("model", "options"), [
    ("seededit-v3", {"guidance_scale": 2}),       # 0..1 on this model
    ("qwen-edit", {"size": "2000*512"}),           # 256..1536 per side
    ("qwen-edit", {"size": "512x512"}),            # W*H, not WxH
    ("gpt-image-1-edit", {"size": "800*800"}),     # only the listed sizes
    ("nano-banana-pro-edit-ultra", {"resolution": "2k"}),
    ("qwen-edit", {"width": 512}),                 # size needs both sides
])
def test_out_of_range_values_are_refused(model: str, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        body_for(model, **options)
