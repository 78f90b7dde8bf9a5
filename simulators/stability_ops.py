"""The Stability simulator's own table of the ten v2beta edit and upscale operations.

Written from PROVIDERS.md ("Stability AI REST v2beta"), independent of editq's
model catalog, so a client bug that sends what the catalog believes but the
provider does not is caught here.

Multipart forms carry every value as text, so each check parses the text the
way the provider documents the field, and answers an error naming the field.
Unknown fields are refused with 400. The real API's handling of them is
UNCONFIRMED (Stability's own examples send a dummy `none` file part to force
multipart on the generate endpoints, which hints that it ignores them); the
simulator is strict because a silently ignored field is how a client bug hides.

(Over 300 lines: one table entry per operation of the ten, each with its checks.)
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from PIL import Image

Check = Callable[[str, str], Any]
"""Parses one text field's value; raises FieldError naming the field."""

CREDIT_USD = Decimal("0.01")
MAX_SEED = 4_294_967_294
FORMATS = ("jpeg", "png", "webp")
INPUT_FORMATS = {"JPEG", "PNG", "WEBP"}
STYLE_PRESETS = (
    "enhance", "anime", "photographic", "digital-art", "comic-book", "fantasy-art", "line-art",
    "analog-film", "neon-punk", "isometric", "low-poly", "origami", "modeling-compound",
    "cinematic", "3d-model", "pixel-art", "tile-texture")
DIRECTIONS = ("left", "right", "up", "down")
PROMPT_FIELDS = ("prompt", "negative_prompt", "search_prompt", "select_prompt",
                 "background_prompt", "foreground_prompt")
_INTEGER = re.compile(r"^-?\d+$")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


class FieldError(ValueError):
    """One field's problem, worded as `name: what is wrong`."""


class Rejected(Exception):
    """A request the provider refuses: HTTP status, error name and messages."""

    def __init__(self, status: int, name: str, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.status, self.name, self.errors = status, name, errors


# --------------------------------------------------------------------------- field checks


def text(low: int, high: int) -> Check:
    def check(name: str, value: str) -> str:
        if low <= len(value) <= high:
            return value
        raise FieldError(f"{name}: must be {low} to {high} characters long, got {len(value)}")
    return check


def integer(low: int, high: int) -> Check:
    def check(name: str, value: str) -> int:
        if _INTEGER.match(value) and low <= int(value) <= high:
            return int(value)
        raise FieldError(f"{name}: must be an integer from {low} to {high}, got {value!r}")
    return check


def number(low: float, high: float) -> Check:
    def check(name: str, value: str) -> float:
        if _NUMBER.match(value) and low <= float(value) <= high:
            return float(value)
        raise FieldError(f"{name}: must be a number from {low:g} to {high:g}, got {value!r}")
    return check


def choice(*values: str) -> Check:
    def check(name: str, value: str) -> str:
        if value in values:
            return value
        raise FieldError(f"{name}: must be one of {', '.join(values)}, got {value!r}")
    return check


def boolish(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise FieldError(f"{name}: must be true or false, got {value!r}")


PROMPT = text(1, 10_000)
OPTIONAL_PROMPT = text(0, 10_000)
SEED = integer(0, MAX_SEED)
STYLE = choice(*STYLE_PRESETS)
UNIT = number(0.0, 1.0)


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Limits:
    """What the main input image must be, judged on its decoded header."""

    min_side: int = 64
    max_side: int | None = None
    min_pixels: int = 4_096
    max_pixels: int = 9_437_184
    max_aspect: float | None = None
    """2.5 means between 1:2.5 and 2.5:1."""

    def problems(self, name: str, width: int, height: int) -> list[str]:
        found = []
        if min(width, height) < self.min_side:
            found.append(f"{name}: each side must be at least {self.min_side} pixels, "
                         f"got {width}x{height}")
        if self.max_side is not None and max(width, height) > self.max_side:
            found.append(f"{name}: each side must be at most {self.max_side} pixels, "
                         f"got {width}x{height}")
        if not self.min_pixels <= width * height <= self.max_pixels:
            found.append(f"{name}: must have {self.min_pixels:,} to {self.max_pixels:,} pixels, "
                         f"got {width * height:,} ({width}x{height})")
        aspect = self.max_aspect
        if aspect is not None and not 1 / aspect <= width / height <= aspect:
            found.append(f"{name}: aspect ratio must be between 1:{aspect:g} and {aspect:g}:1, "
                         f"got {width}x{height}")
        return found


EDIT = Limits()
EDIT_ASPECT = Limits(max_aspect=2.5)
REMOVE_BACKGROUND = Limits(max_pixels=4_194_304)
UPSCALE_FAST = Limits(min_side=32, max_side=1_536, min_pixels=1_024, max_pixels=1_048_576)
UPSCALE_CREATIVE = Limits(max_pixels=1_048_576)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    has_alpha: bool


def inspect_image(name: str, data: bytes) -> ImageInfo:
    """Format, size and alpha from the header alone: cheap enough for every request."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            info = ImageInfo(img.format or "", img.width, img.height, img.has_transparency_data)
    except Exception:  # Pillow raises many kinds for garbage
        raise FieldError(f"{name}: could not be decoded as an image") from None
    if info.format not in INPUT_FORMATS:
        raise FieldError(f"{name}: unsupported format {info.format}; expected jpeg, png or webp")
    return info


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request."""

    data: bytes
    content_type: str
    filename: str


@dataclass(frozen=True)
class Operation:
    name: str
    path: str
    credits: int
    required: tuple[str, ...]
    fields: Mapping[str, Check]
    files: tuple[str, ...]
    limits: Limits
    is_async: bool = False
    formats: tuple[str, ...] = FORMATS
    mask_or_alpha: bool = False
    rules: tuple[Callable[[dict[str, Any], dict[str, Upload]], str | None], ...] = ()
    main_image: str = "image"

    @property
    def usd(self) -> Decimal:
        return self.credits * CREDIT_USD


@dataclass
class Valid:
    """A request that passed validation, with its fields parsed."""

    op: Operation
    params: dict[str, Any]
    files: dict[str, Upload]
    image: ImageInfo

    @property
    def output_format(self) -> str:
        return str(self.params.get("output_format", "png"))


def _one_direction(params: dict[str, Any], files: dict[str, Upload]) -> str | None:
    if any(params.get(d, 0) > 0 for d in DIRECTIONS):
        return None
    return "left: at least one of left, right, up and down must be greater than 0"


def _background(params: dict[str, Any], files: dict[str, Upload]) -> str | None:
    if params.get("background_prompt") or "background_reference" in files:
        return None
    return "background_prompt: is required unless background_reference is given"


def _op(name: str, path: str, credits: int, required: tuple[str, ...],
        fields: Mapping[str, Check], files: tuple[str, ...] = ("image",), *,
        limits: Limits = EDIT, seeded: bool = True, **more: Any) -> Operation:
    common = {"seed": SEED} if seeded else {}
    formats: tuple[str, ...] = more.get("formats", FORMATS)
    every = {**fields, **common, "output_format": choice(*formats)}
    return Operation(name, path, credits, required, every, files, limits, **more)


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    _op("inpaint", "edit/inpaint", 5, ("image", "prompt"),
        {"prompt": PROMPT, "negative_prompt": OPTIONAL_PROMPT, "grow_mask": integer(0, 100),
         "style_preset": STYLE}, ("image", "mask"), mask_or_alpha=True),
    _op("outpaint", "edit/outpaint", 4, ("image",),
        {**{d: integer(0, 2000) for d in DIRECTIONS}, "creativity": number(0.2, 0.5),
         "prompt": OPTIONAL_PROMPT, "style_preset": STYLE},
        limits=EDIT_ASPECT, rules=(_one_direction,)),
    _op("erase", "edit/erase", 5, ("image",), {"grow_mask": integer(0, 20)},
        ("image", "mask"), mask_or_alpha=True),
    _op("search_replace", "edit/search-and-replace", 5, ("image", "prompt", "search_prompt"),
        {"prompt": PROMPT, "search_prompt": PROMPT, "negative_prompt": OPTIONAL_PROMPT,
         "grow_mask": integer(0, 20), "style_preset": STYLE}, limits=EDIT_ASPECT),
    _op("search_recolor", "edit/search-and-recolor", 5, ("image", "prompt", "select_prompt"),
        {"prompt": PROMPT, "select_prompt": PROMPT, "negative_prompt": OPTIONAL_PROMPT,
         "grow_mask": integer(0, 20), "style_preset": STYLE}, limits=EDIT_ASPECT),
    _op("remove_background", "edit/remove-background", 5, ("image",), {},
        limits=REMOVE_BACKGROUND, seeded=False, formats=("png", "webp")),
    _op("relight", "edit/replace-background-and-relight", 8, ("subject_image",),
        {"background_prompt": PROMPT, "foreground_prompt": OPTIONAL_PROMPT,
         "negative_prompt": OPTIONAL_PROMPT, "preserve_original_subject": UNIT,
         "original_background_depth": UNIT, "keep_original_background": boolish,
         "light_source_direction": choice("left", "right", "above", "below"),
         "light_source_strength": UNIT},
        ("subject_image", "background_reference", "light_reference"), limits=EDIT_ASPECT,
        is_async=True, rules=(_background,), main_image="subject_image"),
    _op("upscale_fast", "upscale/fast", 2, ("image",), {}, limits=UPSCALE_FAST, seeded=False),
    _op("upscale_conservative", "upscale/conservative", 40, ("image", "prompt"),
        {"prompt": PROMPT, "negative_prompt": OPTIONAL_PROMPT, "creativity": number(0.2, 0.5)},
        limits=EDIT_ASPECT),
    _op("upscale_creative", "upscale/creative", 60, ("image", "prompt"),
        {"prompt": PROMPT, "negative_prompt": OPTIONAL_PROMPT, "creativity": number(0.1, 0.5),
         "style_preset": STYLE}, limits=UPSCALE_CREATIVE, is_async=True),
)}
BY_PATH = {op.path: op for op in OPERATIONS.values()}


def _not_english(value: str) -> bool:
    """A letter outside the Latin script: the provider only takes English prompts."""
    return any(ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN")
               for ch in value)


def validate(op: Operation, texts: dict[str, list[str]],
             files: dict[str, list[Upload]]) -> Valid:
    """The parsed request, or Rejected with every problem found (400) or the language (422)."""
    errors: list[str] = []
    params: dict[str, Any] = {}
    single: dict[str, Upload] = {}
    given = sorted({*texts, *files})
    for name in given:
        count = len(texts.get(name, [])) + len(files.get(name, []))
        if name not in op.fields and name not in op.files:
            errors.append(f"{name}: unknown field for {op.path}")
        elif count > 1:
            errors.append(f"{name}: given {count} times, expected once")
        elif name in op.files and name in texts:
            errors.append(f"{name}: must be a file upload, not a text value")
        elif name in op.fields and name in files:
            errors.append(f"{name}: must be a text value, not a file upload")
        elif name in op.files:
            single[name] = files[name][0]
        else:
            try:
                params[name] = op.fields[name](name, texts[name][0])
            except FieldError as exc:
                errors.append(str(exc))
    errors += [f"{name}: is required" for name in op.required if name not in given]
    errors += [m for rule in op.rules if (m := rule(params, single)) is not None]
    info: ImageInfo | None = None
    for name, upload in single.items():
        try:
            described = inspect_image(name, upload.data)
        except FieldError as exc:
            errors.append(str(exc))
            continue
        if name == op.main_image:
            info = described
            errors += op.limits.problems(name, described.width, described.height)
            if op.mask_or_alpha and "mask" not in single and not described.has_alpha:
                errors.append(f"mask: is required when {name} has no alpha channel")
    if errors or info is None:
        raise Rejected(400, "bad_request", errors or [f"{op.main_image}: is required"])
    foreign = [n for n in PROMPT_FIELDS if isinstance(params.get(n), str)
               and _not_english(params[n])]
    if foreign:
        raise Rejected(422, "invalid_language",
                       [f"{n}: English is the only supported language for this service"
                        for n in foreign])
    return Valid(op, params, single, info)
