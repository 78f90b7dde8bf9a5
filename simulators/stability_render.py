"""Pillow stand-ins for Stability's results: cheap, but the right size, mode and format.

Each operation's output is shaped like the provider's (outpaint enlarges the
canvas, remove-background answers RGBA with a transparent background, the
upscalers answer the larger size) and visibly differs from the input (tinted
and labelled), so a client test can tell a result from an echo. Runs in a
worker thread; the inputs were already checked by `stability_ops.validate`.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from typing import Any

from PIL import Image, ImageChops, ImageOps

from simulators.common import encode_image, label_image, tint_for
from simulators.stability_ops import Valid

CONSERVATIVE_PIXELS = 4_194_304  # "about 4 megapixels": 2048 x 2048
CREATIVE_MAX_SIDE = 4_096
_BACKGROUND_TOLERANCE = 32


class Undecodable(ValueError):
    """The image's header was fine but its pixels are not (a truncated file)."""


def output_size(op: str, width: int, height: int, params: dict[str, Any]) -> tuple[int, int]:
    """The size of the result the provider would answer for an input of this size."""
    if op == "outpaint":
        return (width + params.get("left", 0) + params.get("right", 0),
                height + params.get("up", 0) + params.get("down", 0))
    if op == "upscale_fast":
        factor = 4.0
    elif op == "upscale_conservative":
        factor = max(2.0, math.sqrt(CONSERVATIVE_PIXELS / (width * height)))
    elif op == "upscale_creative":
        factor = min(4.0, CREATIVE_MAX_SIDE / max(width, height))
    else:
        return width, height
    return max(1, round(width * factor)), max(1, round(height * factor))


def _open(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.convert("RGBA") if opened.has_transparency_data \
                else opened.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise Undecodable(str(exc)) from exc


def check_decodes(data: bytes) -> None:
    """Decode every pixel once; raises Undecodable for a truncated or corrupt file."""
    _open(data)


def _tinted(img: Image.Image, label: str, strength: float) -> Image.Image:
    rgb = img.convert("RGB")
    return Image.blend(rgb, Image.new("RGB", rgb.size, tint_for(label)), strength)


def _edit_area(img: Image.Image, op: str, mask_data: bytes | None) -> Image.Image:
    """Tint the area to edit: the mask's white, else the transparent area, else everything."""
    edited = _tinted(img, op, 0.5)
    if mask_data is not None:
        mask = ImageOps.grayscale(_open(mask_data)).resize(img.size)
    elif img.mode == "RGBA" and op in ("inpaint", "erase"):
        mask = ImageOps.invert(img.getchannel("A"))
    else:
        return edited
    return Image.composite(edited, img.convert("RGB"), mask)


def _outpaint(img: Image.Image, params: dict[str, Any]) -> Image.Image:
    size = output_size("outpaint", img.width, img.height, params)
    mean = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    fill = Image.blend(Image.new("RGB", (1, 1), mean),
                       Image.new("RGB", (1, 1), tint_for("outpaint")), 0.5).getpixel((0, 0))
    canvas = Image.new("RGB", size, fill)
    canvas.paste(img.convert("RGB"), (params.get("left", 0), params.get("up", 0)))
    return canvas


def _remove_background(img: Image.Image) -> Image.Image:
    """Transparent wherever the colour is close to the commonest corner colour."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    corners = [rgb.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    background = Counter(corners).most_common(1)[0][0]
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, background))
    red, green, blue = diff.split()
    distance = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    alpha = distance.point(lambda v: 255 if v > _BACKGROUND_TOLERANCE else 0)
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def _relight(img: Image.Image, params: dict[str, Any]) -> Image.Image:
    """Tinted, and brighter towards the light source."""
    lit = _tinted(img, "relight", 0.35)
    ramp = Image.linear_gradient("L")  # 256x256, dark at the top, bright at the bottom
    direction = params.get("light_source_direction", "above")
    ramp = {"above": ramp.rotate(180), "below": ramp, "left": ramp.rotate(-90),
            "right": ramp.rotate(90)}[direction]
    strength = float(params.get("light_source_strength", 0.3))
    ramp = ramp.resize(lit.size).point(lambda v: round(v * strength))
    return Image.composite(Image.new("RGB", lit.size, (255, 255, 240)), lit, ramp)


def _blur(img: Image.Image) -> Image.Image:
    """What a CONTENT_FILTERED result looks like: too blurred to show anything."""
    small = img.resize((max(1, img.width // 16), max(1, img.height // 16)),
                       Image.Resampling.BILINEAR)
    return small.resize(img.size, Image.Resampling.BILINEAR)


def render(valid: Valid, filtered: bool = False) -> bytes:
    """The encoded result of a valid request; raises Undecodable for a corrupt input."""
    op, params = valid.op.name, valid.params
    img = _open(valid.files[valid.op.main_image].data)
    mask = valid.files.get("mask")
    if op in ("inpaint", "erase", "search_replace", "search_recolor"):
        out = label_image(_edit_area(img, op, mask.data if mask else None), op)
    elif op == "outpaint":
        out = label_image(_outpaint(img, params), op)
    elif op == "remove_background":
        out = _remove_background(img)  # no label: it would make a corner opaque
    elif op == "relight":
        out = label_image(_relight(img, params), op)
    else:
        size = output_size(op, img.width, img.height, params)
        out = label_image(_tinted(img.resize(size, Image.Resampling.BICUBIC), op, 0.15), op)
    if filtered:
        out = _blur(out)
    return encode_image(out, valid.output_format)
