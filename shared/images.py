"""Decoding and checking images, both the ones users send and the ones providers return.

Limits are checked from the header before any pixel is decoded, so a
decompression bomb is refused without ever being expanded in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass

from PIL import Image

from shared.errors import ImageTooLarge, InvalidImage, UnsupportedImageFormat

# editq checks the pixel count itself, from the header, against its own
# configurable limit (below); Pillow's global guard would refuse first with
# less information, and differently per Pillow version.
Image.MAX_IMAGE_PIXELS = None

ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=.-]+)*;base64,(?P<data>.*)$",
                       re.DOTALL)


@dataclass(frozen=True)
class ImageInfo:
    """An image's bytes with what was learned by decoding them."""

    data: bytes
    content_type: str
    width: int
    height: int
    mode: str
    has_alpha: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.content_type]


def decode_base64_image(value: str, *, field: str, max_bytes: int) -> bytes:
    """Accept bare base64 or a `data:` URI; refuse anything else with the field's name."""
    match = _DATA_URI.match(value.strip())
    payload = match.group("data") if match else value
    # A base64 text is 4/3 the size of its bytes: refuse early, before decoding.
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise ImageTooLarge(f"{field} is larger than {max_bytes} bytes", field=field,
                            limit=max_bytes)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{field} is not valid base64 or a base64 data URI",
                           field=field) from exc


def inspect_image(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check an image's size, format and pixel count, then decode it fully once."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{field} is {len(data)} bytes, over the limit of {max_bytes}",
                            field=field, limit=max_bytes, bytes=len(data))
    if not data:
        raise InvalidImage(f"{field} is empty", field=field)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            if fmt not in ALLOWED_FORMATS:
                raise UnsupportedImageFormat(
                    f"{field} is {fmt or 'an unknown format'}; "
                    f"accepted: {', '.join(sorted(ALLOWED_FORMATS))}",
                    field=field, format=fmt,
                )
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{field} is {width}x{height} = {width * height} pixels, "
                    f"over the limit of {max_pixels}",
                    field=field, limit=max_pixels, pixels=width * height,
                )
            img.load()
            mode = img.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                mode == "P" and "transparency" in img.info)
    except (UnsupportedImageFormat, ImageTooLarge):
        raise
    except Exception as exc:  # Pillow raises many kinds for corrupt data
        raise InvalidImage(f"{field} could not be decoded as an image", field=field) from exc
    return ImageInfo(data=data, content_type=ALLOWED_FORMATS[fmt], width=width,
                     height=height, mode=mode, has_alpha=has_alpha)


def sniff_content_type(data: bytes) -> str:
    """The content type of bytes already checked by `inspect_image`, from the header only."""
    with Image.open(io.BytesIO(data)) as img:
        return ALLOWED_FORMATS.get(img.format or "", "application/octet-stream")


def open_image(data: bytes) -> Image.Image:
    """Open bytes already checked by `inspect_image`."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def encode_image(img: Image.Image, fmt: str = "PNG") -> bytes:
    fmt = fmt.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()
