"""The offline provider: real edits with Pillow, so a job does real work with no network.

It stays the provider of demos and tests; everything around it (queueing,
storage, costs) is the same code that serves the remote providers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from shared.errors import InvalidInput
from shared.images import ALLOWED_FORMATS, encode_image, open_image
from shared.providers.base import (
    ImageEditOptions,
    ImageEditResult,
    OutputImage,
    Submitted,
)
from shared.providers.catalog import ModelSpec
from shared.providers.looks import Looker

Step = Callable[[Image.Image], Image.Image]


def _rotate(angle: float) -> Step:
    return lambda img: img.rotate(angle, expand=True)


def _blur(radius: float) -> Step:
    return lambda img: img.filter(ImageFilter.GaussianBlur(radius))


def _flip(direction: str) -> Step:
    return ImageOps.mirror if direction == "horizontal" else ImageOps.flip


def _grayscale(img: Image.Image) -> Image.Image:
    return ImageOps.grayscale(img)


def _sepia(img: Image.Image) -> Image.Image:
    return ImageOps.colorize(ImageOps.grayscale(img), "#3b2a1a", "#f4e3c1")


def _invert(img: Image.Image) -> Image.Image:
    return ImageOps.invert(img.convert("RGB"))


def _sharpen(img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.SHARPEN)


def _zoom_out(factor: float) -> Step:
    def step(img: Image.Image) -> Image.Image:
        rgba = img.convert("RGBA")
        w, h = rgba.size
        canvas = Image.new("RGBA", (round(w * factor), round(h * factor)), (0, 0, 0, 0))
        canvas.paste(rgba, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        return canvas

    return step


def _resize(width: int | None, height: int | None) -> Step:
    def step(img: Image.Image) -> Image.Image:
        w, h = img.size
        tw = width or max(1, round(w * (height or h) / h))
        th = height or max(1, round(h * tw / w))
        return img.resize((tw, th), Image.Resampling.LANCZOS)

    return step


# Words of a general_edit prompt, in the order they are applied when several appear.
_KEYWORDS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Step]]] = [
    (re.compile(r"\b(gr[ae]yscale|black and white|monochrome)\b"), lambda m: _grayscale),
    (re.compile(r"\bsepia\b"), lambda m: _sepia),
    (re.compile(r"\binvert\b"), lambda m: _invert),
    (re.compile(r"\bblur\b"), lambda m: _blur(3)),
    (re.compile(r"\bsharpen\b"), lambda m: _sharpen),
    (re.compile(r"\b(flip|mirror)\b"), lambda m: _flip("horizontal")),
    (re.compile(r"\brotate(?:\s+by)?\s+(-?\d{1,3})"), lambda m: _rotate(float(m.group(1)))),
]


def _prompt_steps(prompt: str) -> list[Step]:
    text = prompt.lower()
    return [make(match) for pattern, make in _KEYWORDS if (match := pattern.search(text))]


def _steps(options: ImageEditOptions, params: dict[str, Any]) -> list[Step]:
    op = options.operation
    if op == "general_edit":
        return _prompt_steps(options.prompt or "")
    if op == "grayscale":
        return [_grayscale]
    if op == "rotate":
        return [_rotate(float(params.get("angle", 90)))]
    if op == "blur":
        return [_blur(float(params.get("radius", 2)))]
    if op == "flip":
        return [_flip(str(params.get("direction", "horizontal")))]
    if op == "zoom_out":
        return [_zoom_out(float(params.get("factor", 1.5)))]
    if op == "resize":
        return [_resize(options.width, options.height)]
    raise InvalidInput(f"local provider has no operation {op!r}")


class LocalProvider:
    """Pillow edits in the worker's own process: no network, no cost."""

    name = "local"
    min_look_seconds = 0.0
    webhooks = False
    fetches_urls = False

    def validate(self, spec: ModelSpec, options: ImageEditOptions) -> None:
        if options.operation == "general_edit" and not _prompt_steps(options.prompt or ""):
            raise InvalidInput(
                "the local model understands prompts that mention grayscale, sepia, invert, "
                "blur, sharpen, flip, mirror or 'rotate N'",
                model=spec.id,
            )
        if options.operation == "resize" and not (options.width or options.height):
            raise InvalidInput("resize needs options.width or options.height", model=spec.id)

    def submit(self, spec: ModelSpec, options: ImageEditOptions,
               webhook_url: str | None = None) -> Submitted:
        """Pillow is quick: the edit is done within the submit, with nothing to follow."""
        return Submitted(result=self.edit(spec, options))

    def looker(self, concurrency: int) -> Looker:
        raise InvalidInput("the local provider has nothing to follow")

    def collect(self, spec: ModelSpec, request_id: str, answer: Any) -> ImageEditResult:
        raise InvalidInput("the local provider has nothing to follow")

    def edit(self, spec: ModelSpec, options: ImageEditOptions) -> ImageEditResult:
        self.validate(spec, options)
        img = open_image(options.images[0])
        for step in _steps(options, options.extra):
            img = step(img)
        fmt = str(options.extra.get("output_format", "png")).upper()
        fmt = "JPEG" if fmt == "JPG" else fmt
        return ImageEditResult(
            images=[OutputImage(data=encode_image(img, fmt), content_type=ALLOWED_FORMATS[fmt])],
            provider=self.name,
            model=spec.id,
            metadata={"width": img.width, "height": img.height},
        )
