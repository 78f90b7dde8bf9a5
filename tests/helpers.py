"""Small images and waits shared by the tests."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from PIL import Image

T = TypeVar("T")


def image_bytes(size: tuple[int, int] = (64, 48), fmt: str = "PNG", mode: str = "RGB",
                color: tuple[int, ...] = (200, 30, 30)) -> bytes:
    img = Image.new(mode, size, color[: len(mode)] if mode != "L" else color[0])
    # A second colour in the top-left corner makes flips and rotations observable.
    img.paste((20, 20, 220)[: len(mode)] if mode != "L" else 0, (0, 0, size[0] // 4, size[1] // 4))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_for(fn: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.05) -> T:
    """Poll until `fn` answers something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sim_call(base_url: str, method: str, path: str, **kwargs: Any) -> Any:
    """A simulator's admin endpoint (/_sim/...), its JSON answer; raises on an error."""
    response = httpx.request(method, base_url + path, timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def bomb_png(size: tuple[int, int] = (6000, 6000)) -> bytes:
    """A PNG of a few hundred KB that declares `size`: 108 MB of RGB once decoded."""
    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, "PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def bomb_jpeg(size: tuple[int, int] = (6000, 6000)) -> bytes:
    """A flat JPEG that declares `size`: small on disk, 108 MB of RGB once decoded."""
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buf, "JPEG", quality=10)
    return buf.getvalue()


def bomb_webp(size: tuple[int, int] = (6000, 6000)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


def progressive_jpeg_bomb(size: int = 6320) -> bytes:
    """A 700-byte CMYK progressive JPEG whose frame claims `size` x `size`: libjpeg holds
    a progressive image's coefficients whole, 300 MB here, even to decode it at 1/8."""
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    at = data.index(b"\xff\xc2")
    return data[:at + 5] + struct.pack(">HH", size, size) + data[at + 9:]


def many_scans_jpeg(scans: int = 10_000) -> bytes:
    """A small progressive JPEG whose last scan is repeated `scans` times (minutes of CPU
    for a decoder that takes them all)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * scans + data[end:]


def app_segments_jpeg(segments: int = 2_400_000) -> bytes:
    """A JPEG of `segments` empty APP5 segments (9.6 MB for 2.4 million): Pillow keeps a
    list entry for each one it reads."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "JPEG")
    data = buf.getvalue()
    return data[:2] + b"\xff\xe5\x00\x02" * segments + data[2:]


def text_bomb_png(inflated: int = 1 << 25, orientation: int | None = None) -> bytes:
    """A PNG with a zTXt chunk after its image data that inflates to `inflated` bytes (32
    KB on disk for 32 MB; issue 23's was 1 GB in 1 MB), over Pillow's 1 MB cap for a text
    chunk: Pillow refuses it only when it loads the pixels. With
    `orientation`, an eXIf chunk asks for that EXIF orientation."""
    buf = io.BytesIO()
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buf, "PNG", exif=exif)
    else:
        image.save(buf, "PNG")
    data = buf.getvalue()
    compressor = zlib.compressobj(9)
    payload = b"".join(compressor.compress(b"\0" * (1 << 24)) for _ in range(inflated >> 24))
    body = b"bomb\0\0" + payload + compressor.flush()
    chunk = (struct.pack(">I", len(body)) + b"zTXt" + body
             + struct.pack(">I", zlib.crc32(b"zTXt" + body)))
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunk + data[end:]


def header_attack(host: str, port: int, megabytes: int = 128) -> bytes:
    """One connection sending a `megabytes` MB header (issue 23's first recipe), stopping
    when the server closes on it; what the server answered (b"": nothing)."""
    import socket

    sock = socket.create_connection((host, port), timeout=120)
    block = b"a" * (1 << 20)
    try:
        sock.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(megabytes):
            sock.sendall(block)
        sock.sendall(b"\r\n\r\n")
    except OSError:
        pass  # closed on us: what it answered first is read below
    answer = read_until_closed(sock)
    sock.close()
    return answer


def read_until_closed(sock: Any, timeout: float = 10) -> bytes:
    """Everything a server sends on `sock` until it closes the connection."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except OSError:
        pass
    return answer


def tenant_of(database_url: str, key: str) -> str:
    """The id of the tenant an API key belongs to."""
    from shared.db import session_scope
    from shared.tenants import authenticate

    with session_scope(database_url) as session:
        return authenticate(session, key).tenant_id


def output_key_of(database_url: str, job_id: str, index: int = 0, extension: str = "png") -> str:
    """Where a job's output is stored (under its tenant)."""
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import Job
    from shared.storage import output_key

    with session_scope(database_url) as session:
        tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    assert tenant_id is not None, job_id
    return output_key(tenant_id, job_id, index, extension)
