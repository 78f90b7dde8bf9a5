"""Checking images, both the ones users send and the ones providers return.

Nothing here decodes an image's pixels in full: the API must never hold a decoded
image (a few kilobytes of PNG can declare 40 megapixels, 160 MB once decoded). An
image is checked from its header (format, declared size, frames, EXIF orientation)
and from its structure: a PNG's chunks are walked and their CRCs checked up to IEND;
a WebP's RIFF chunks must add up to the file; a JPEG must end in EOI after its scan,
and its scan is decoded at 1/8 scale (libjpeg's DCT scaling: 1/64 of the pixels), which
finds a truncated scan in a bounded amount of memory. (libjpeg mends some corruption
inside a scan with a warning; such an image is accepted, as any JPEG reader would.)
Pixels are decoded only in the worker, for the edits that need them (`open_image`,
`upright`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageOps

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
        raise ImageTooLarge(f"{field} is larger than {max_bytes} bytes", field=field,
                            limit=max_bytes)
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"{field} is not valid base64 or a base64 data URI",
                           field=field) from exc


def inspect_image(data: bytes, *, field: str, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Check an image's size, format, pixel count, frames and structure; decode no pixels."""
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
            if getattr(img, "n_frames", 1) != 1:
                raise InvalidImage(f"{field} is animated; send a still image", field=field)
            mode = img.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                mode == "P" and "transparency" in img.info)
            orientation = _orientation(img)
            _STRUCTURE[fmt](data, img)
    except (UnsupportedImageFormat, ImageTooLarge, InvalidImage):
        raise
    except Exception as exc:  # Pillow raises many kinds for corrupt data
        raise InvalidImage(f"{field} could not be decoded as an image", field=field) from exc
    if orientation in (5, 6, 7, 8):  # a quarter turn: shown with its sides swapped
        width, height = height, width
    return ImageInfo(data=data, content_type=ALLOWED_FORMATS[fmt], width=width,
                     height=height, mode=mode, has_alpha=has_alpha, orientation=orientation)


class _Broken(ValueError):
    """The file's structure does not hold: truncated, or corrupt."""


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


def _png(data: bytes, img: Image.Image) -> None:
    """Every chunk whole and its CRC right, up to IEND, with image data before it."""
    at, seen_data = 8, False
    while True:
        if at + 12 > len(data):
            raise _Broken("PNG ends before IEND")
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        end = at + 12 + length
        if end > len(data):
            raise _Broken(f"PNG chunk {kind!r} is cut short")
        crc = struct.unpack(">I", data[end - 4:end])[0]
        if zlib.crc32(data[at + 4:end - 4]) != crc:
            raise _Broken(f"PNG chunk {kind!r} is corrupt")
        seen_data = seen_data or kind == b"IDAT"
        if kind == b"IEND":
            if not seen_data:
                raise _Broken("PNG has no image data")
            return
        at = end


def _webp(data: bytes, img: Image.Image) -> None:
    """The RIFF container's declared size is the file's, and its chunks fill it."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise _Broken("not a RIFF WEBP file")
    if struct.unpack("<I", data[4:8])[0] + 8 != len(data):
        raise _Broken("WebP size does not match its RIFF header")
    at = 12
    while at < len(data):
        if at + 8 > len(data):
            raise _Broken("WebP chunk header cut short")
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        at += 8 + size + (size & 1)
    if at != len(data):
        raise _Broken("WebP chunks overrun the file")


def _jpeg(data: bytes, img: Image.Image) -> None:
    """An end-of-image marker after the scan, and the scan decoded at 1/8 scale."""
    if data.rfind(b"\xff\xd9") < data.find(b"\xff\xda"):
        raise _Broken("JPEG ends before its end-of-image marker")
    img.draft(img.mode if img.mode in ("L", "RGB") else "RGB",
              (max(1, img.width // 8), max(1, img.height // 8)))
    img.load()  # raises on a truncated or corrupt scan


_STRUCTURE = {"PNG": _png, "WEBP": _webp, "JPEG": _jpeg}


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
