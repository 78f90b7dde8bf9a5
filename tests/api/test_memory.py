"""The API's memory under the worst inputs: a real API process, its peak RSS (VmHWM,
reset before each case) measured from outside. The budget (README, "Hostile input"):
images that declare 36 megapixels in a few hundred kilobytes cost what their bytes do,
not what their pixels would: at most 16 MB of RSS per request, alone or 8 at once."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from tests.api.conftest import ApiProcess, api_process
from tests.helpers import bomb_jpeg, bomb_png, bomb_webp

pytestmark = pytest.mark.timeout(120)
MB = 1024 * 1024
PER_REQUEST = 16 * MB


@pytest.fixture(scope="module")
def api(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str
        ) -> Iterator[ApiProcess]:
    with api_process(stack, database_url, redis_base, s3_url, bucket,
                     {"EDITQ_WAVESPEED_API_KEY": "unused"}) as api:
        yield api


def peak_rise(api: ApiProcess, send: object, times: int) -> int:
    """The API's peak RSS while `times` requests run at once, above its RSS before."""
    pid = api.child.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def read(name: str) -> int:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if x.startswith(name + ":"))
        return int(line.split()[1]) * 1024

    before = read("VmRSS")
    with ThreadPoolExecutor(times) as pool:
        codes = set(pool.map(lambda _: send(), range(times)))  # type: ignore[operator]
    assert codes <= {200, 202}, codes
    return read("VmHWM") - before


@pytest.mark.parametrize("times", [1, 8])
def test_pixel_bombs_cost_their_bytes_not_their_pixels(api: ApiProcess, times: int) -> None:
    # given 14 images that each declare 6000x6000 (108 MB of RGB each once decoded)
    bombs = [bomb_png(), bomb_jpeg(), bomb_webp()] * 4 + [bomb_png(), bomb_jpeg()]
    body = {"images": [base64.b64encode(b).decode() for b in bombs], "prompt": "p",
            "model": "nano-banana-pro-edit-ultra", "operation": "multi_image_edit"}
    http = httpx.Client(base_url=api.url, timeout=60,
                        headers={"Authorization": f"Bearer {api.key}"})
    for _ in range(2):  # warm: the first request of a kind loads code and pools
        http.post("/v1/quotes", json=body)

    # when they are quoted, then submitted as jobs (stored to S3), `times` at once
    for path in ("/v1/quotes", "/v1/jobs"):
        rise = peak_rise(api, lambda path=path: http.post(path, json=body).status_code, times)
        # then the API's peak rises by at most the budget per request
        assert rise <= times * PER_REQUEST, f"{path}: +{rise / MB:.1f} MB for {times}"
