"""Small images and waits shared by the tests."""

from __future__ import annotations

import base64
import io
import time
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
