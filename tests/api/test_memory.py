"""The API's memory under the worst inputs: a real API process, its peak RSS (VmHWM,
reset before each case) measured from outside. The budget (README, "Hostile input"):
images that declare 36 megapixels in a few hundred kilobytes cost what their bytes do,
not what their pixels (or scans, segments, text chunks) would: at most 16 MB of RSS per
request beyond 4 times its body, alone or 8 at once."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiProcess
from tests.api.test_jobs_api import assert_problem
from tests.helpers import (
    app_segments_jpeg,
    bomb_jpeg,
    bomb_png,
    bomb_webp,
    many_scans_jpeg,
    progressive_jpeg_bomb,
    text_bomb_png,
)

pytestmark = pytest.mark.timeout(120)
MB = 1024 * 1024
PER_REQUEST = 16 * MB


@dataclass
class Measured:
    """What `times` requests at once cost the API: its peak RSS above its RSS before,
    its CPU seconds, and what each answered."""

    rise: int
    cpu: float
    answers: list[Any]


def measure(api: ApiProcess, send: Callable[[], Any], times: int = 1) -> Measured:
    pid = api.child.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def read(name: str) -> int:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if x.startswith(name + ":"))
        return int(line.split()[1]) * 1024

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before, cpu_before = read("VmRSS"), cpu()
    with ThreadPoolExecutor(times) as pool:
        answers = list(pool.map(lambda _: send(), range(times)))
    return Measured(read("VmHWM") - before, cpu() - cpu_before, answers)


def peak_rise(api: ApiProcess, send: Callable[[], int], times: int) -> int:
    """The API's peak RSS while `times` accepted requests run at once, above its RSS
    before."""
    measured = measure(api, send, times)
    assert set(measured.answers) <= {200, 202}, measured.answers
    return measured.rise


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


@pytest.mark.parametrize("times", [1, 8])
def test_progressive_jpeg_bombs_cost_their_bytes_not_their_coefficients(
        api: ApiProcess, times: int) -> None:
    # given 14 CMYK progressive JPEGs of 700 bytes, each declaring 6320x6320 (issue 23:
    # one such request added 307 MB, eight at once 2.44 GB: libjpeg holds a progressive
    # image's coefficients whole, even to decode it at 1/8 scale)
    body = {"images": [base64.b64encode(progressive_jpeg_bomb()).decode()] * 14,
            "prompt": "p", "model": "nano-banana-pro-edit-ultra",
            "operation": "multi_image_edit"}
    http = httpx.Client(base_url=api.url, timeout=60,
                        headers={"Authorization": f"Bearer {api.key}"})
    http.post("/v1/quotes", json=body)  # warm
    # when they are quoted, `times` at once
    rise = peak_rise(api, lambda: http.post("/v1/quotes", json=body).status_code, times)
    # then each costs the API at most the budget (their scans are never decoded there)
    assert rise <= times * PER_REQUEST, f"+{rise / MB:.1f} MB for {times}"


@pytest.mark.parametrize("bomb", [many_scans_jpeg, app_segments_jpeg, text_bomb_png],
                         ids=["10000-scans", "2.4M-app-segments", "png-text-bomb"])
def test_images_that_would_cost_a_decoder_minutes_or_gigabytes_are_refused_cheaply(
        api: ApiProcess, bomb: Callable[[], bytes]) -> None:
    # given an image whose structure would keep a decoder busy for minutes (10,000
    # progressive scans: 239 s of CPU), or make it keep millions of segments (+286 MB),
    # or inflate a text chunk past what the worker's decoder accepts
    data = bomb()
    body = {"image": base64.b64encode(data).decode(), "prompt": "p", "model": "qwen-edit"}
    http = httpx.Client(base_url=api.url, timeout=60,
                        headers={"Authorization": f"Bearer {api.key}"})
    # when it is quoted
    measured = measure(api, lambda: http.post("/v1/quotes", json=body))
    # then it is refused as invalid_image, for a fraction of a second of CPU, and the API's
    # memory rises as for any image of its size: the budget of a request, and 4 times its
    # body (the body, its base64 text and the bytes decoded from it; a legitimate photo
    # costs the same)
    [answer] = measured.answers
    problem = assert_problem(answer, 422, "invalid_image")
    assert "costs more to decode" in problem["detail"]
    assert measured.cpu < 1.0, measured.cpu
    assert measured.rise <= PER_REQUEST + 4 * len(body["image"]), f"+{measured.rise / MB:.1f} MB"
