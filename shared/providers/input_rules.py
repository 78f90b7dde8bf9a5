"""Per-model input rules that go beyond option ranges: image limits and required fields.

They are data in the catalog, checked at submit time, so a request the
provider would refuse is refused by editq first, with a clear 422, before
anything is stored or paid for.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.errors import InvalidInput


class ImageOutOfLimits(InvalidInput):
    code = "image_out_of_limits"
    title = "Image outside the model's limits"


class MissingOption(InvalidInput):
    code = "missing_option"
    title = "A required option is missing"


class MaskRequired(InvalidInput):
    code = "mask_required"
    title = "A mask (or an alpha channel) is required"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageLimits(_Strict):
    """Sides, pixel count and aspect ratio (width / height) an input image must respect."""

    min_side: int | None = None
    max_side: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    min_aspect: float | None = None
    max_aspect: float | None = None

    def check(self, model_id: str, field: str, width: int, height: int) -> None:
        def refuse(why: str) -> None:
            raise ImageOutOfLimits(f"{field} is {width}x{height}: model {model_id!r} {why}",
                                   model=model_id, field=field, width=width, height=height)

        side_min, side_max = min(width, height), max(width, height)
        if self.min_side is not None and side_min < self.min_side:
            refuse(f"needs each side at least {self.min_side} px")
        if self.max_side is not None and side_max > self.max_side:
            refuse(f"takes sides of at most {self.max_side} px")
        pixels = width * height
        if self.min_pixels is not None and pixels < self.min_pixels:
            refuse(f"needs at least {self.min_pixels:,} pixels")
        if self.max_pixels is not None and pixels > self.max_pixels:
            refuse(f"takes at most {self.max_pixels:,} pixels")
        aspect = width / height
        if self.min_aspect is not None and aspect < self.min_aspect - 1e-9:
            refuse(f"needs an aspect ratio (width/height) of at least {self.min_aspect:g}")
        if self.max_aspect is not None and aspect > self.max_aspect + 1e-9:
            refuse(f"needs an aspect ratio (width/height) of at most {self.max_aspect:g}")


class Requirement(_Strict):
    """At least one of `any_of` must be given (non-zero if `nonzero`), or enough images."""

    any_of: tuple[str, ...]
    nonzero: bool = False
    or_images: int = 0
    message: str

    def check(self, model_id: str, options: dict[str, Any], image_count: int) -> None:
        given = [name for name in self.any_of
                 if name in options and (not self.nonzero or options[name])]
        if given or (self.or_images and image_count >= self.or_images):
            return
        raise MissingOption(f"model {model_id!r}: {self.message}", model=model_id,
                            options=list(self.any_of))
