"""The WaveSpeed simulator's own table of the 14 editing models, written from PROVIDERS.md.

It is deliberately independent of editq's model catalog: a client bug that
sends a field the catalog believes in but the provider does not is only
caught if the simulator judges the request by its own reading of the contract.

The real API's handling of unknown fields is UNCONFIRMED. The simulator is
strict (an unknown field is a 400 naming it) because a silently ignored field
is how a client bug hides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

Check = Callable[[str, Any], str | None]
"""Judges one field's value; answers an error message naming the field, or None."""

ALWAYS_ALLOWED = ("enable_sync_mode", "enable_base64_output", "webhook_url")
_SIZE = re.compile(r"^(\d+)\*(\d+)$")


class InvalidRequest(ValueError):
    """A submit body the provider would refuse with HTTP 400."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> str | None:
        if _is_int(value) and low <= value <= high:
            return None
        return f"{name} must be an integer between {low} and {high}, got {value!r}"
    return check


def number(low: float, high: float) -> Check:
    def check(name: str, value: Any) -> str | None:
        if _is_number(value) and low <= value <= high:
            return None
        return f"{name} must be a number between {low} and {high}, got {value!r}"
    return check


def choice(*values: str) -> Check:
    def check(name: str, value: Any) -> str | None:
        if isinstance(value, str) and value in values:
            return None
        return f"{name} must be one of {', '.join(values)}, got {value!r}"
    return check


def text(max_length: int = 10_000) -> Check:
    def check(name: str, value: Any) -> str | None:
        if isinstance(value, str) and len(value) <= max_length:
            return None
        return f"{name} must be a string of at most {max_length} characters"
    return check


def boolean(name: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"


def size(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> str | None:
        match = _SIZE.match(value) if isinstance(value, str) else None
        if match and all(low <= int(side) <= high for side in match.groups()):
            return None
        return (f"{name} must be 'W*H' with each side between {low} and {high}, "
                f"got {value!r}")
    return check


def parse_size(value: Any) -> tuple[int, int] | None:
    """`"W*H"` as a pair; None for `auto`, absent or anything else."""
    match = _SIZE.match(value) if isinstance(value, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


SEED = integer(-1, 2_147_483_647)
FLUX_RATIOS = choice("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
IDEOGRAM_RATIOS = choice("1:1", "16:9", "9:16", "4:3", "3:4")
NANO_RATIOS = choice("1:1", "3:2", "2:3", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
FORMATS = choice("jpeg", "png", "webp")


def flat(price: str) -> Callable[[Mapping[str, Any]], Decimal]:
    def price_of(body: Mapping[str, Any]) -> Decimal:
        return Decimal(price)
    return price_of


def ideogram_price(body: Mapping[str, Any]) -> Decimal:
    speed = body.get("rendering_speed", "Default")
    return {"Turbo": Decimal("0.10"), "Default": Decimal("0.15"),
            "Quality": Decimal("0.20")}[speed]


def nano_banana_price(body: Mapping[str, Any]) -> Decimal:
    return {"4k": Decimal("0.15"), "8k": Decimal("0.18")}[body.get("resolution", "4k")]


def gpt_image_price(body: Mapping[str, Any]) -> Decimal:
    square, rectangular = {"low": ("0.011", "0.016"), "medium": ("0.042", "0.063"),
                           "high": ("0.167", "0.25")}[body.get("quality", "medium")]
    dims = parse_size(body.get("size"))
    # `auto` or no size counts as square.
    return Decimal(rectangular if dims and dims[0] != dims[1] else square)


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts, how its output is shaped, and what it costs."""

    path: str
    image_field: Literal["image", "images"]
    price: Callable[[Mapping[str, Any]], Decimal]
    params: Mapping[str, Check] = field(default_factory=dict)
    max_images: int = 1
    prompt: bool = True
    mask: Literal["none", "optional", "required"] = "none"
    output_format: str | None = None
    """Default of the model's `output_format` field; None: no such field, output is PNG."""
    resize: Literal["none", "size", "canvas"] = "none"

    @property
    def accepted(self) -> frozenset[str]:
        names = {self.image_field, *self.params, *ALWAYS_ALLOWED}
        if self.prompt:
            names.add("prompt")
        if self.mask != "none":
            names.add("mask_image")
        return frozenset(names)

    def output_ext(self, body: Mapping[str, Any]) -> str:
        if self.output_format is None:
            return "png"
        return str(body.get("output_format", self.output_format))

    def output_shape(self, body: Mapping[str, Any]
                     ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(size, canvas) for the renderer; defaults of `size` are not applied."""
        if self.resize == "size":
            return parse_size(body.get("size")), None
        if self.resize == "canvas":
            return None, (int(body.get("width", 1536)), int(body.get("height", 1536)))
        return None, None


_QWEN = {"size": size(256, 1536), "seed": SEED, "output_format": FORMATS}

MODELS: dict[str, ModelSpec] = {spec.path: spec for spec in [
    ModelSpec("wavespeed-ai/qwen-image/edit", "image", flat("0.02"), _QWEN,
              output_format="jpeg", resize="size"),
    ModelSpec("wavespeed-ai/qwen-image/edit-plus", "images", flat("0.02"), _QWEN, max_images=3,
              output_format="jpeg", resize="size"),
    ModelSpec("wavespeed-ai/step1x-edit", "image", flat("0.03"),
              {"negative_prompt": text(), "seed": SEED, "guidance_scale": number(0, 20),
               "num_inference_steps": integer(1, 50)}),
    # output_format's choices and default are not in PROVIDERS.md: qwen's are assumed.
    ModelSpec("wavespeed-ai/hidream-e1-full", "image", flat("0.024"),
              {"seed": SEED, "output_format": FORMATS}, output_format="jpeg"),
    ModelSpec("bytedance/seededit-v3", "image", flat("0.027"),
              {"guidance_scale": number(0, 1), "seed": SEED}),
    ModelSpec("alibaba/wan-2.5/image-edit", "images", flat("0.035"),
              {"size": size(384, 5000), "seed": SEED}, max_images=2, resize="size"),
    ModelSpec("wavespeed-ai/flux-kontext-pro", "image", flat("0.04"),
              {"guidance_scale": number(1, 10),
               "safety_tolerance": choice("1", "2", "3", "4", "5")}),
    ModelSpec("wavespeed-ai/flux-kontext-pro/multi", "images", flat("0.04"),
              {"seed": SEED, "guidance_scale": number(1, 20), "aspect_ratio": FLUX_RATIOS},
              max_images=5),
    ModelSpec("wavespeed-ai/flux-kontext-max", "image", flat("0.08"),
              {"seed": SEED, "guidance_scale": number(1, 20), "aspect_ratio": FLUX_RATIOS}),
    ModelSpec("ideogram-ai/ideogram-character", "image", ideogram_price,
              {"style": choice("Auto", "Fiction", "Realistic"),
               "rendering_speed": choice("Turbo", "Default", "Quality"),
               "aspect_ratio": IDEOGRAM_RATIOS}),
    # output_format's default is not in PROVIDERS.md: png is assumed.
    ModelSpec("google/nano-banana-pro/edit-ultra", "images", nano_banana_price,
              {"aspect_ratio": NANO_RATIOS, "resolution": choice("4k", "8k"),
               "output_format": choice("png", "jpeg")}, max_images=14, output_format="png"),
    ModelSpec("openai/gpt-image-1", "image", gpt_image_price,
              {"quality": choice("low", "medium", "high"),
               "size": choice("auto", "1024*1024", "1024*1536", "1536*1024")},
              mask="optional", resize="size"),
    # seed, strength and output_format are UNCONFIRMED in PROVIDERS.md; accepted here.
    ModelSpec("wavespeed-ai/z-image/turbo-inpaint", "image", flat("0.02"),
              {"size": size(256, 1536), "seed": SEED, "strength": number(0, 1),
               "output_format": FORMATS}, mask="required", output_format="jpeg", resize="size"),
    ModelSpec("wavespeed-ai/image-zoom-out", "image", flat("0.02"),
              {"width": integer(256, 1536), "height": integer(256, 1536)}, prompt=False,
              resize="canvas"),
]}


def validate(spec: ModelSpec, body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Refuse what the model would refuse; answer the image inputs as (field, value).

    The first pair is the image the output is made from; a mask comes last.
    """
    unknown = sorted(set(body) - spec.accepted)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r} for model {spec.path}; accepted: "
                             f"{', '.join(sorted(spec.accepted))}")
    required = [spec.image_field] + (["prompt"] if spec.prompt else [])
    if spec.mask == "required":
        required.append("mask_image")
    for name in required:
        if name not in body or body[name] is None:
            raise InvalidRequest(f"{name} is required")
    if spec.prompt and (not isinstance(body["prompt"], str) or not body["prompt"].strip()):
        raise InvalidRequest("prompt must be a non-empty string")
    for name, check in spec.params.items():
        if name in body and (error := check(name, body[name])) is not None:
            raise InvalidRequest(error)
    for name in ("enable_sync_mode", "enable_base64_output"):
        if name in body and (error := boolean(name, body[name])) is not None:
            raise InvalidRequest(error)
    if "webhook_url" in body and not isinstance(body["webhook_url"], str):
        raise InvalidRequest("webhook_url must be a string")
    images: list[tuple[str, str]] = []
    raw = body[spec.image_field]
    if spec.image_field == "image":
        if not isinstance(raw, str) or not raw:
            raise InvalidRequest("image must be a non-empty string (URL or base64)")
        images.append(("image", raw))
    else:
        if not isinstance(raw, list) or not raw:
            raise InvalidRequest("images must be a non-empty list of URLs or base64 strings")
        if len(raw) > spec.max_images:
            raise InvalidRequest(f"images: at most {spec.max_images} images for {spec.path}, "
                                 f"got {len(raw)}")
        for index, item in enumerate(raw):
            if not isinstance(item, str) or not item:
                raise InvalidRequest(f"images[{index}] must be a non-empty string")
            images.append((f"images[{index}]", item))
    if "mask_image" in body and body["mask_image"] is not None:
        if not isinstance(body["mask_image"], str) or not body["mask_image"]:
            raise InvalidRequest("mask_image must be a non-empty string (URL or base64)")
        images.append(("mask_image", body["mask_image"]))
    return images
