"""An image file's structure, walked before any decoder sees it, so that an image costs
what its bytes do.

Written here because no library bounds this work: Pillow (and libjpeg, libpng under
it) trust a file's layout. Left to them, a 702-byte progressive JPEG declaring
6320x6320 made libjpeg allocate its whole coefficient buffer (300 MB) to decode it even
at 1/8 scale; a JPEG of 2.4 million empty APP segments made Pillow keep a list of them
(286 MB); 10,000 repeated progressive scans took 239 s of CPU; a PNG whose text chunk
after the image data inflates to 1 GB was accepted, and then failed in the worker.

So each accepted format is walked with counts capped, in time and memory linear in its
bytes, and refused before Pillow opens it when it is malformed (`Broken`) or would cost
more to decode than a real image of its size (`TooCostly`):

- JPEG: markers with their lengths, scans skipped at C speed; at most
  `MAX_JPEG_SEGMENTS` segments and `MAX_JPEG_SCANS` scans; baseline, extended or
  progressive Huffman coding only (what every camera and encoder writes); it must end
  in EOI. Whether it is progressive is answered: such a scan is never decoded by the
  API (its coefficients are held whole, whatever the scale).
- PNG: every chunk whole with its CRC, up to IEND, image data before it; at most
  `MAX_PNG_CHUNKS` chunks and `MAX_PNG_ANCILLARY` that are not image data; compressed
  text and ICC chunks inflate to at most `MAX_PNG_TEXT_BYTES` each and
  `MAX_PNG_TEXT_TOTAL` in all (Pillow's own caps are 1 MB each and 64 MB: a chunk over
  them fails when the worker loads the image).
- WebP: the RIFF size is the file's, at most `MAX_WEBP_CHUNKS` chunks fill it.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

MAX_JPEG_SEGMENTS = 1000
MAX_JPEG_SCANS = 100
MAX_PNG_CHUNKS = 65_536
MAX_PNG_ANCILLARY = 256
MAX_PNG_TEXT_BYTES = 1024 * 1024
MAX_PNG_TEXT_TOTAL = 8 * 1024 * 1024
MAX_WEBP_CHUNKS = 64


class Broken(ValueError):
    """The file's structure does not hold: truncated, or corrupt."""


class TooCostly(ValueError):
    """A well-formed file that would cost more to decode than any real image its size."""


@dataclass(frozen=True)
class Layout:
    """What the walk learned: the format, and for a JPEG whether it is progressive."""

    format: str
    progressive: bool = False


def walk(data: bytes) -> Layout | None:
    """Walk the structure of a PNG, JPEG or WebP file; None when it is none of these
    (the caller refuses it by what Pillow says it is)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        _png(data)
        return Layout("PNG")
    if data.startswith(b"\xff\xd8\xff"):
        return Layout("JPEG", progressive=_jpeg(data))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _webp(data)
        return Layout("WEBP")
    return None


# --- JPEG -------------------------------------------------------------------------------

_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RST0-7: markers without a length
_SOF_BASELINE_EXTENDED = {0xC0, 0xC1}
_SOF_PROGRESSIVE = 0xC2
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# The end of a scan's entropy-coded data: 0xFF followed by neither a stuffed 0x00, a
# restart marker nor a fill byte.
_END_OF_SCAN = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")


def _jpeg(data: bytes) -> bool:
    """Walk a JPEG from SOI to EOI; answer whether it is progressive."""
    at, segments, scans, frame = 2, 0, 0, None
    while True:
        if at + 2 > len(data) or data[at] != 0xFF:
            raise Broken("JPEG ends before its end-of-image marker")
        while at + 1 < len(data) and data[at + 1] == 0xFF:  # fill bytes
            at += 1
        if at + 2 > len(data):
            raise Broken("JPEG ends before its end-of-image marker")
        marker = data[at + 1]
        if marker == 0xD9:
            if frame is None or scans == 0:
                raise Broken("JPEG has no frame or no scan")
            return frame == _SOF_PROGRESSIVE
        if marker in _STANDALONE:
            at += 2
            continue
        if at + 4 > len(data):
            raise Broken("JPEG segment cut short")
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if length < 2 or at + 2 + length > len(data):
            raise Broken("JPEG segment cut short")
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise TooCostly(f"JPEG has over {MAX_JPEG_SEGMENTS} segments")
        if marker in _SOF_OTHER:
            raise TooCostly("JPEG is lossless, hierarchical or arithmetic-coded; "
                            "send a baseline or progressive JPEG")
        if marker in _SOF_BASELINE_EXTENDED or marker == _SOF_PROGRESSIVE:
            if frame is not None:
                raise Broken("JPEG has two frames")
            frame = marker
        at += 2 + length
        if marker == 0xDA:  # SOS: the scan's entropy-coded data follows
            if frame is None:
                raise Broken("JPEG scan before its frame")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise TooCostly(f"JPEG has over {MAX_JPEG_SCANS} scans")
            end = _END_OF_SCAN.search(data, at)
            if end is None:
                raise Broken("JPEG ends inside a scan")
            at = end.start()


# --- PNG --------------------------------------------------------------------------------

_COMPRESSED = {b"zTXt", b"iCCP", b"iTXt"}


def _png(data: bytes) -> None:
    """Every chunk whole and its CRC right, up to IEND, with image data before it."""
    at, chunks, ancillary, text, seen_data = 8, 0, 0, 0, False
    while True:
        if at + 12 > len(data):
            raise Broken("PNG ends before IEND")
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        end = at + 12 + length
        if end > len(data):
            raise Broken(f"PNG chunk {kind!r} is cut short")
        crc = struct.unpack(">I", data[end - 4:end])[0]
        if zlib.crc32(data[at + 4:end - 4]) != crc:
            raise Broken(f"PNG chunk {kind!r} is corrupt")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise TooCostly(f"PNG has over {MAX_PNG_CHUNKS} chunks")
        if kind == b"IEND":
            if not seen_data:
                raise Broken("PNG has no image data")
            return
        if kind == b"IDAT":
            seen_data = True
        else:
            ancillary += 1
            if ancillary > MAX_PNG_ANCILLARY:
                raise TooCostly(f"PNG has over {MAX_PNG_ANCILLARY} chunks besides its "
                                f"image data")
            if kind in _COMPRESSED:
                text += _inflated_size(kind, data[at + 8:end - 4])
                if text > MAX_PNG_TEXT_TOTAL:
                    raise TooCostly(f"PNG's text and profile chunks inflate to over "
                                    f"{MAX_PNG_TEXT_TOTAL} bytes")
        at = end


def _inflated_size(kind: bytes, body: bytes) -> int:
    """How many bytes a compressed chunk's payload inflates to (refused past
    MAX_PNG_TEXT_BYTES, having inflated no more than that)."""
    keyword_end = body.find(b"\0")
    if keyword_end < 0:
        raise Broken(f"PNG chunk {kind!r} has no keyword")
    if kind == b"iTXt":
        # keyword\0 flag method language\0 translated\0 text: compressed only if flag is 1
        if len(body) < keyword_end + 3 or body[keyword_end + 1] != 1:
            return 0
        rest = body[keyword_end + 3:]
        for _ in range(2):
            cut = rest.find(b"\0")
            if cut < 0:
                raise Broken("PNG iTXt chunk is cut short")
            rest = rest[cut + 1:]
        payload = rest
    else:  # zTXt and iCCP: keyword\0 method payload
        payload = body[keyword_end + 2:]
    inflater = zlib.decompressobj()
    try:
        size = len(inflater.decompress(payload, MAX_PNG_TEXT_BYTES))
    except zlib.error as exc:
        raise Broken(f"PNG chunk {kind!r} does not inflate") from exc
    if inflater.unconsumed_tail:
        raise TooCostly(f"a PNG {kind.decode()} chunk inflates to over "
                        f"{MAX_PNG_TEXT_BYTES} bytes")
    return size


# --- WebP -------------------------------------------------------------------------------


def _webp(data: bytes) -> None:
    """The RIFF container's declared size is the file's, and its chunks fill it."""
    if len(data) < 12:
        raise Broken("not a RIFF WEBP file")
    if struct.unpack("<I", data[4:8])[0] + 8 != len(data):
        raise Broken("WebP size does not match its RIFF header")
    at, chunks = 12, 0
    while at < len(data):
        if at + 8 > len(data):
            raise Broken("WebP chunk header cut short")
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:
            raise TooCostly(f"WebP has over {MAX_WEBP_CHUNKS} chunks")
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        at += 8 + size + (size & 1)
    if at != len(data):
        raise Broken("WebP chunks overrun the file")
