"""Checking images, both the ones users send and the ones providers return.

Nothing here decodes an image's pixels in full: the API must never hold a decoded
image (a few kilobytes of PNG can declare 40 megapixels, 160 MB once decoded). An
image's structure is walked first, before any decoder sees it, with its counts capped
(`shared.image_structure`: a JPEG's segments and scans, a PNG's chunks and what its
text inflates to, a WebP's chunks), so that checking it costs what its bytes do. Then
its header is read (format, declared size, frames, EXIF orientation), and a baseline
JPEG's scan is decoded at 1/8 scale (libjpeg's DCT scaling: 1/64 of the pixels), which
finds a truncated scan in a bounded amount of memory. A progressive JPEG's scans are not
decoded here: libjpeg holds all of a progressive image's coefficients, at any scale.
(libjpeg mends some corruption inside a scan with a warning; such an image is accepted,
as any JPEG reader would.) Pixels are decoded only in the worker, for the edits that
need them, after the same check (`load_input`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass

from PIL import Image, ImageOps

from shared import image_structure
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
    # EXIF orientation (1 to 8; 1 is upright). `width` x `height` are as displayed,
    # that is after the rotation the orientation asks for.
    orientation: int = 1

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
        # (its size as decoded, told from the text's length: never where reading stopped)
        text = "".join(payload.split())
        size = len(text) * 3 // 4 - (len(text) - len(text.rstrip("=")))
        if size > max_bytes:
            raise ImageTooLarge(f"{field} is {size} bytes, over the limit of {max_bytes}",
                                field=field, limit=max_bytes, bytes=size)
        payload = text
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{field} is not valid base64 or a base64 data URI",
                           field=field) from exc


def inspect_image(data: bytes, *, field: str, max_bytes: int, max_pixels: int,
                  scan: bool = True) -> ImageInfo:
    """Check an image's size, format, pixel count, frames and structure; decode no pixels
    (but a baseline JPEG's scan at 1/8 scale, unless `scan` is False: the worker skips it
    for inputs the API has checked, as it decodes them anyway when an edit needs to)."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{field} is {len(data)} bytes, over the limit of {max_bytes}",
                            field=field, limit=max_bytes, bytes=len(data))
    if not data:
        raise InvalidImage(f"{field} is empty", field=field)
    try:
        layout = image_structure.walk(data)
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            if fmt not in ALLOWED_FORMATS or layout is None or layout.format != fmt:
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
            if getattr(img, "n_frames", 1) != 1:
                raise InvalidImage(f"{field} is animated; send a still image", field=field)
            mode = img.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                mode == "P" and "transparency" in img.info)
            orientation = _orientation(img)
            if scan and fmt == "JPEG" and not layout.progressive:
                _decode_scan_at_one_eighth(img)
    except (UnsupportedImageFormat, ImageTooLarge, InvalidImage):
        raise
    except image_structure.TooCostly as exc:
        raise InvalidImage(f"{field} costs more to decode than editq accepts: {exc}",
                           field=field) from exc
    except Exception as exc:  # Pillow raises many kinds for corrupt data
        raise InvalidImage(f"{field} could not be decoded as an image", field=field) from exc
    if orientation in (5, 6, 7, 8):  # a quarter turn: shown with its sides swapped
        width, height = height, width
    return ImageInfo(data=data, content_type=ALLOWED_FORMATS[fmt], width=width,
                     height=height, mode=mode, has_alpha=has_alpha, orientation=orientation)


def _orientation(img: Image.Image) -> int:
    """From the EXIF block read with the header, if any. (Not `img.getexif()`: for a PNG
    without one it decodes the whole image, looking for an eXIf chunk after the data.)"""
    raw = img.info.get("exif")
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        value = int(exif.get(0x0112, 1))
    except Exception:  # an unreadable EXIF block is no orientation, not a broken image
        return 1
    return value if 1 <= value <= 8 else 1


def _decode_scan_at_one_eighth(img: Image.Image) -> None:
    """A baseline JPEG's scan, decoded at 1/8 scale: raises on a truncated or corrupt one."""
    img.draft(img.mode if img.mode in ("L", "RGB") else "RGB",
              (max(1, img.width // 8), max(1, img.height // 8)))
    img.load()


def upright(data: bytes) -> bytes:
    """The image turned as its EXIF orientation says, re-encoded in its format; the
    same bytes when it is already upright. (Worker side: this decodes the pixels.)"""
    with Image.open(io.BytesIO(data)) as img:
        if _orientation(img) == 1:
            return data
        fmt = img.format or "PNG"
        turned = ImageOps.exif_transpose(img)
        buf = io.BytesIO()
        if fmt == "JPEG":
            turned.save(buf, "JPEG", quality=95)
        else:
            turned.save(buf, fmt)
        return buf.getvalue()


def load_input(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> bytes:
    """A stored input as the worker uses it: checked as the API checked it, then turned
    upright. Whatever fails here is the image's fault (`InvalidImage`: the job fails at
    once, nothing billed), never a crash that leaves the job running (inputs stored before
    a check was added are met here too)."""
    inspect_image(data, field=field, max_bytes=max_bytes, max_pixels=max_pixels, scan=False)
    try:
        return upright(data)
    except Exception as exc:  # Pillow raises many kinds; a decoder's own caps among them
        raise InvalidImage(f"{field} could not be decoded as an image", field=field) from exc


def sniff_content_type(data: bytes) -> str:
    """The content type of bytes already checked by `inspect_image`, from the header only."""
    with Image.open(io.BytesIO(data)) as img:
        return ALLOWED_FORMATS.get(img.format or "", "application/octet-stream")


def open_image(data: bytes, field: str = "image") -> Image.Image:
    """Open bytes already checked by `inspect_image`, decoding their pixels; what no
    decoder can read is `InvalidImage`, not a crash."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:
        raise InvalidImage(f"{field} could not be decoded as an image", field=field) from exc
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
