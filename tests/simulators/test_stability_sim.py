"""The Stability simulator, spoken to over real HTTP on loopback, as editq's client will."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest
from click.testing import CliRunner
from PIL import Image, ImageStat

from cli.sim import sim as sim_cli
from cli.stack import free_port
from simulators.common import (
    RunningServer,
    SlidingWindowLimit,
    parse_fault_rates,
    serve_in_thread,
)
from simulators.stability import StabilitySimConfig, create_app
from simulators.stability_ops import OPERATIONS
from simulators.stability_state import parse_faults
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test"
AUTH = {"authorization": f"Bearer {KEY}"}
GRAY = (128, 128, 128)
WHITE = (255, 255, 255)
RED = (220, 20, 20)


def picture(size: tuple[int, int] = (64, 64), mode: str = "RGB", fmt: str = "PNG",
            color: tuple[int, ...] = GRAY, subject: tuple[int, ...] | None = None,
            transparent_left: bool = False) -> bytes:
    """A small image: one colour, optionally a centred square subject or a transparent half."""
    img = Image.new(mode, size, color[: len(mode)])
    w, h = size
    if subject is not None:
        img.paste(subject[: len(mode)], (w // 4, h // 4, w - w // 4, h - h // 4))
    if transparent_left:
        img.paste((0, 0, 0, 0), (0, 0, w // 2, h))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def noise(size: tuple[int, int]) -> bytes:
    img = Image.frombytes("RGB", size, random.Random(1).randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def left_half_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    """White (edit) on the left half, black (keep) on the right."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    return buf.getvalue()


IMG = picture()
RGBA_HALF = picture(mode="RGBA", color=(*GRAY, 255), transparent_left=True)
MASK_LEFT = left_half_mask()
SUBJECT = picture(color=WHITE, subject=RED)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningServer]:
    config = StabilitySimConfig(api_key=KEY, latency="0.05", seed=7, slow_seconds=1.0)
    with serve_in_thread(create_app(config)) as server:
        yield server


@pytest.fixture
def client(sim: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers=AUTH, timeout=20) as c:
        c.post("/_sim/reset").raise_for_status()
        yield c


@pytest.fixture
def make_sim() -> Iterator[Callable[..., RunningServer]]:
    """A private simulator for tests that need another configuration."""
    servers: list[RunningServer] = []

    def start(**config: Any) -> RunningServer:
        servers.append(serve_in_thread(create_app(StabilitySimConfig(**config))))
        return servers[-1]
    yield start
    for server in servers:
        server.stop()


def post(c: httpx.Client, op: str, data: dict[str, str] | None = None,
         files: dict[str, bytes] | None = None, accept: str | None = "image/*",
         **kw: Any) -> httpx.Response:
    """A multipart POST; text parts carry no filename, as browsers and clients send them."""
    parts: list[tuple[str, Any]] = [(k, (None, v)) for k, v in (data or {}).items()]
    parts += [(k, (f"{k}.png", v, "image/png")) for k, v in (files or {}).items()]
    headers = {"accept": accept} if accept is not None else {}
    return c.post(f"/v2beta/stable-image/{OPERATIONS[op].path}", files=parts,
                  headers={**headers, **kw.pop("headers", {})}, **kw)


def result_get(c: httpx.Client, result_id: str, accept: str = "image/*") -> httpx.Response:
    return c.get(f"/v2beta/results/{result_id}", headers={"accept": accept})


def wait_result(c: httpx.Client, result_id: str, accept: str = "image/*") -> httpx.Response:
    def done() -> httpx.Response | None:
        response = result_get(c, result_id, accept)
        assert response.status_code in (200, 202), response.text
        return response if response.status_code == 200 else None
    return wait_for(done, 10, f"result {result_id}", interval=0.02)


def artifact(response: httpx.Response, accept: str) -> tuple[Image.Image, str, int]:
    """The image, finish reason and seed, from either accept mode."""
    assert response.status_code == 200, response.text
    if accept == "application/json":
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"image", "finish_reason", "seed"}
        data, reason, seed = base64.b64decode(body["image"]), body["finish_reason"], body["seed"]
    else:
        data = response.content
        reason, seed = response.headers["finish-reason"], int(response.headers["seed"])
    img = Image.open(io.BytesIO(data))
    img.load()
    if accept != "application/json":
        assert response.headers["content-type"] == f"image/{img.format.lower()}"  # type: ignore[union-attr]
    return img, reason, seed


def run(c: httpx.Client, op: str, data: dict[str, str], files: dict[str, bytes],
        accept: str = "image/*") -> tuple[Image.Image, str, int]:
    """One operation to its result, sync or async."""
    response = post(c, op, data, files, accept=accept)
    if OPERATIONS[op].is_async:
        assert response.status_code == 200, response.text
        response = wait_result(c, response.json()["id"], accept)
    return artifact(response, accept)


def stats(c: httpx.Client) -> dict[str, Any]:
    figures: dict[str, Any] = c.get("/_sim/stats").json()
    return figures


def script(c: httpx.Client, *steps: tuple[str, str]) -> None:
    response = c.post("/_sim/faults",
                      json={"script": [{"endpoint": e, "fault": f} for e, f in steps]})
    assert response.status_code == 200, response.text


def check_error(response: httpx.Response, status: int, name: str,
                mentions: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"id", "name", "errors"}
    assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
    assert body["name"] == name and body["errors"]
    if mentions is not None:
        assert any(mentions in e for e in body["errors"]), body["errors"]


# --------------------------------------------------------------------------- every operation

# op -> (text fields, files, expected size, mode, format)
VALID: dict[str, tuple[dict[str, str], dict[str, bytes], tuple[int, int], str, str]] = {
    "inpaint": ({"prompt": "a cat", "negative_prompt": "blur", "grow_mask": "100",
                 "seed": "42", "output_format": "webp", "style_preset": "anime"},
                {"image": IMG, "mask": MASK_LEFT}, (64, 64), "RGB", "WEBP"),
    "outpaint": ({"left": "10", "down": "20", "creativity": "0.5", "prompt": "",
                  "output_format": "jpeg", "style_preset": "3d-model"},
                 {"image": IMG}, (74, 84), "RGB", "JPEG"),
    "erase": ({"grow_mask": "20", "seed": "0"}, {"image": RGBA_HALF}, (64, 64), "RGB", "PNG"),
    "search_replace": ({"prompt": "a dog", "search_prompt": "cat", "grow_mask": "0",
                        "negative_prompt": "", "style_preset": "tile-texture"},
                       {"image": picture((160, 64))}, (160, 64), "RGB", "PNG"),
    "search_recolor": ({"prompt": "blue", "select_prompt": "car", "grow_mask": "3"},
                       {"image": picture((64, 160))}, (64, 160), "RGB", "PNG"),
    "remove_background": ({"output_format": "webp"}, {"image": SUBJECT}, (64, 64), "RGBA",
                          "WEBP"),
    "relight": ({"background_prompt": "a beach", "foreground_prompt": "a person",
                 "negative_prompt": "x", "preserve_original_subject": "0.6",
                 "original_background_depth": "0", "keep_original_background": "false",
                 "light_source_direction": "left", "light_source_strength": "1",
                 "seed": "4294967294"},
                {"subject_image": picture((64, 96)), "light_reference": IMG}, (64, 96), "RGB",
                "PNG"),
    "upscale_fast": ({"output_format": "png"}, {"image": picture((32, 48))}, (128, 192), "RGB",
                     "PNG"),
    "upscale_conservative": ({"prompt": "sharp", "creativity": "0.2", "negative_prompt": "n",
                              "seed": "5", "output_format": "jpeg"},
                             {"image": IMG}, (2048, 2048), "RGB", "JPEG"),
    "upscale_creative": ({"prompt": "sharp", "creativity": "0.1", "style_preset": "enhance"},
                         {"image": picture((96, 64))}, (384, 256), "RGB", "PNG"),
}


def test_the_table_covers_the_ten_operations() -> None:
    assert set(OPERATIONS) == set(VALID) and len(OPERATIONS) == 10
    assert {op for op, spec in OPERATIONS.items() if spec.is_async} == {
        "relight", "upscale_creative"}


@pytest.mark.parametrize("accept", ["image/*", "application/json"])
@pytest.mark.parametrize("op", sorted(VALID))
def test_a_valid_request_answers_the_operations_result(client: httpx.Client, op: str,
                                                       accept: str) -> None:
    # given a valid request for the operation
    data, files, size, mode, fmt = VALID[op]
    # when it is run to its result in this accept mode
    img, reason, seed = run(client, op, data, files, accept)
    # then the result has the operation's size, mode and format
    assert (img.size, img.mode, img.format) == (size, mode, fmt)
    assert reason == "SUCCESS"
    given = int(data.get("seed", "0"))
    assert seed == given if given else 1 <= seed <= 4_294_967_294
    # and it was charged once, at the operation's price
    (charged,) = stats(client)["billing"].items()
    credits = OPERATIONS[op].credits
    assert charged == (op, {"results": 1, "credits": credits, "usd": charged[1]["usd"]})
    assert Decimal(charged[1]["usd"]) == credits * Decimal("0.01")


def test_accept_header_absent_means_image(sim: RunningServer) -> None:
    with httpx.Client(base_url=sim.url, headers=AUTH) as c:
        del c.headers["accept"]  # httpx sends */* unless told otherwise
        response = post(c, "upscale_fast", {}, {"image": picture((32, 32))}, accept=None)
        assert "accept" not in response.request.headers
    img, reason, _ = artifact(response, "image/*")
    assert (img.size, reason) == ((128, 128), "SUCCESS")


def test_sync_post_is_held_for_the_latency(client: httpx.Client) -> None:
    client.put("/_sim/latency", json={"latency": "0.6"}).raise_for_status()
    started = time.monotonic()
    response = post(client, "erase", {}, {"image": RGBA_HALF})
    assert response.status_code == 200 and time.monotonic() - started >= 0.6


def test_inpaint_tints_only_the_masks_white_area(client: httpx.Client) -> None:
    img, _, _ = run(client, "inpaint", {"prompt": "p"}, {"image": IMG, "mask": MASK_LEFT})
    rgb = img.convert("RGB")
    assert rgb.getpixel((60, 60)) == GRAY  # black in the mask: kept
    changed = rgb.getpixel((10, 60))
    assert isinstance(changed, tuple)
    assert max(abs(a - b) for a, b in zip(changed, GRAY, strict=True)) > 30


def test_erase_without_mask_edits_the_transparent_area(client: httpx.Client) -> None:
    img, _, _ = run(client, "erase", {}, {"image": RGBA_HALF})
    assert img.getpixel((60, 60)) == GRAY and img.getpixel((10, 60)) != GRAY


def test_search_operations_change_the_whole_image(client: httpx.Client) -> None:
    img, _, _ = run(client, "search_recolor", {"prompt": "p", "select_prompt": "s"},
                    {"image": IMG})
    assert img.getpixel((0, 63)) != GRAY and img.getpixel((63, 63)) != GRAY


def test_outpaint_places_the_original_by_the_directions(client: httpx.Client) -> None:
    img, _, _ = run(client, "outpaint", {"left": "10", "up": "5", "right": "30"},
                    {"image": IMG})
    assert img.size == (104, 69)
    assert img.getpixel((10 + 60, 5 + 60)) == GRAY  # inside the original, away from the label
    assert img.getpixel((100, 66)) != GRAY and img.getpixel((5, 66)) != GRAY  # the new areas


def test_remove_background_makes_the_border_colour_transparent(client: httpx.Client) -> None:
    img, _, _ = run(client, "remove_background", {"output_format": "png"}, {"image": SUBJECT})
    assert (img.mode, img.format) == ("RGBA", "PNG")
    alpha = img.getchannel("A")
    assert [alpha.getpixel(xy) for xy in ((0, 0), (63, 0), (0, 63), (63, 63))] == [0] * 4
    assert img.getpixel((32, 32)) == (*RED, 255)


def test_upscale_conservative_answers_about_four_megapixels_at_least_twice(
        client: httpx.Client) -> None:
    img, _, _ = run(client, "upscale_conservative", {"prompt": "p", "output_format": "jpeg"},
                    {"image": picture((1600, 1200))})
    assert img.size == (3200, 2400)  # already near 4 MP: at least 2x


def test_upscale_creative_is_capped_at_4096_per_side(client: httpx.Client) -> None:
    img, _, _ = run(client, "upscale_creative", {"prompt": "p", "output_format": "jpeg"},
                    {"image": picture((2048, 512))})
    assert img.size == (4096, 1024)


def test_async_result_is_in_progress_then_done_and_stays_readable(
        client: httpx.Client) -> None:
    # given a creative upscale that runs half a second
    client.put("/_sim/latency", json={"latency": "0.5"}).raise_for_status()
    response = post(client, "upscale_creative", {"prompt": "p"}, {"image": IMG},
                    accept="image/*")
    # then the POST answers an id at once, and the result is in progress
    assert response.status_code == 200 and set(response.json()) == {"id"}
    result_id = response.json()["id"]
    assert len(result_id) == 64 and int(result_id, 16) >= 0
    pending = result_get(client, result_id)
    assert pending.status_code == 202
    assert pending.json() == {"id": result_id, "status": "in-progress"}
    assert stats(client)["in_flight"] == 1 and stats(client)["billing"] == {}
    # and when done, it can be read again, in either mode, charged once
    first, _, seed = artifact(wait_result(client, result_id), "image/*")
    again, _, seed_again = artifact(result_get(client, result_id, "application/json"),
                                    "application/json")
    assert first.size == again.size == (256, 256) and seed == seed_again
    figures = stats(client)
    assert figures["billing"]["upscale_creative"]["results"] == 1 and figures["in_flight"] == 0
    assert (figures["results_created"], figures["completed"]) == (1, 1)


def test_results_expire_after_the_ttl(make_sim: Callable[..., RunningServer]) -> None:
    server = make_sim(latency="0.05", result_ttl=0.5)
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        result_id = post(c, "relight", {"background_prompt": "b"},
                         {"subject_image": IMG}).json()["id"]
        assert wait_result(c, result_id).status_code == 200
        wait_for(lambda: result_get(c, result_id).status_code == 404, 5, "expiry")
        check_error(result_get(c, result_id), 404, "not_found", result_id)


def test_unknown_result_and_unknown_path_are_404(client: httpx.Client) -> None:
    check_error(result_get(client, "0" * 64), 404, "not_found")
    check_error(client.post("/v2beta/stable-image/edit/sketch", files=[("a", (None, "b"))]),
                404, "not_found")
    check_error(client.get("/v2beta/nothing"), 404, "not_found")


# --------------------------------------------------------------------------- validation


def variant(op: str, drop: tuple[str, ...] = (), **changes: str | bytes) -> tuple[
        dict[str, str], dict[str, bytes]]:
    """VALID[op] with fields dropped and others set (bytes values are files)."""
    data, files, *_ = VALID[op]
    texts = {k: v for k, v in data.items() if k not in drop}
    uploads = {k: v for k, v in files.items() if k not in drop}
    for name, value in changes.items():
        if isinstance(value, bytes):
            uploads[name] = value
        else:
            texts[name] = value
    return texts, uploads


TOO_BIG_EDIT = picture((3073, 3072), mode="L", color=(9,))  # 9,440,256 px
TRUNCATED = noise((64, 64))[:3000]
BAD_REQUESTS: list[tuple[str, str, tuple[str, ...], dict[str, str | bytes]]] = [
    # (operation, field named in the error, fields dropped, fields changed)
    ("inpaint", "image", ("image",), {}),
    ("inpaint", "prompt", ("prompt",), {}),
    ("inpaint", "prompt", (), {"prompt": ""}),
    ("inpaint", "prompt", (), {"prompt": "x" * 10_001}),
    ("inpaint", "negative_prompt", (), {"negative_prompt": "x" * 10_001}),
    ("inpaint", "grow_mask", (), {"grow_mask": "101"}),
    ("inpaint", "grow_mask", (), {"grow_mask": "-1"}),
    ("inpaint", "seed", (), {"seed": "4294967295"}),
    ("inpaint", "seed", (), {"seed": "1.5"}),
    ("inpaint", "output_format", (), {"output_format": "gif"}),
    ("inpaint", "style_preset", (), {"style_preset": "watercolor"}),
    ("inpaint", "strength", (), {"strength": "0.5"}),
    ("inpaint", "mask", ("mask",), {}),
    ("inpaint", "mask", (), {"mask": b"not an image"}),
    ("inpaint", "image", (), {"image": picture((63, 64))}),
    ("inpaint", "image", (), {"image": TOO_BIG_EDIT}),
    ("inpaint", "image", (), {"image": b"GIF89a not really"}),
    ("inpaint", "image", (), {"image": picture(fmt="GIF")}),
    ("inpaint", "image", (), {"image": TRUNCATED, "mask": MASK_LEFT}),
    ("outpaint", "image", ("image",), {}),
    ("outpaint", "left", ("left", "down"), {}),
    ("outpaint", "left", ("down",), {"left": "0", "up": "0"}),
    ("outpaint", "left", (), {"left": "2001"}),
    ("outpaint", "down", (), {"down": "ten"}),
    ("outpaint", "creativity", (), {"creativity": "0.6"}),
    ("outpaint", "negative_prompt", (), {"negative_prompt": "n"}),
    ("outpaint", "image", (), {"image": picture((64, 161))}),
    ("outpaint", "image", (), {"image": picture((161, 64))}),
    ("erase", "image", ("image",), {"output_format": "png"}),
    ("erase", "grow_mask", (), {"grow_mask": "21"}),
    ("erase", "mask", (), {"image": IMG}),
    ("erase", "prompt", (), {"prompt": "p"}),
    ("erase", "image", (), {"image": picture((64, 63), mode="RGBA")}),
    ("search_replace", "prompt", ("prompt",), {}),
    ("search_replace", "search_prompt", ("search_prompt",), {}),
    ("search_replace", "grow_mask", (), {"grow_mask": "21"}),
    ("search_replace", "image", (), {"image": picture((161, 64))}),
    ("search_recolor", "select_prompt", ("select_prompt",), {}),
    ("search_recolor", "grow_mask", (), {"grow_mask": "3.5"}),
    ("search_recolor", "image", (), {"image": picture((64, 161))}),
    ("remove_background", "image", ("image",), {}),
    ("remove_background", "output_format", (), {"output_format": "jpeg"}),
    ("remove_background", "seed", (), {"seed": "1"}),
    ("remove_background", "image", (), {"image": picture((2049, 2048), mode="L", color=(9,))}),
    ("relight", "subject_image", ("subject_image",), {}),
    ("relight", "background_prompt", ("background_prompt",), {}),
    ("relight", "preserve_original_subject", (), {"preserve_original_subject": "1.5"}),
    ("relight", "original_background_depth", (), {"original_background_depth": "-0.1"}),
    ("relight", "light_source_strength", (), {"light_source_strength": "strong"}),
    ("relight", "light_source_direction", (), {"light_source_direction": "up"}),
    ("relight", "keep_original_background", (), {"keep_original_background": "yes"}),
    ("relight", "light_reference", (), {"light_reference": b"junk"}),
    ("relight", "subject_image", (), {"subject_image": picture((161, 64))}),
    ("relight", "subject_image", (), {"subject_image": TRUNCATED}),
    ("upscale_fast", "image", ("image",), {}),
    ("upscale_fast", "image", (), {"image": picture((31, 40))}),
    ("upscale_fast", "image", (), {"image": picture((1537, 32))}),
    ("upscale_fast", "image", (), {"image": picture((1024, 1025), mode="L", color=(9,))}),
    ("upscale_fast", "seed", (), {"seed": "1"}),
    ("upscale_conservative", "prompt", ("prompt",), {}),
    ("upscale_conservative", "creativity", (), {"creativity": "0.19"}),
    ("upscale_conservative", "style_preset", (), {"style_preset": "anime"}),
    ("upscale_conservative", "image", (), {"image": picture((64, 161))}),
    ("upscale_creative", "prompt", ("prompt",), {}),
    ("upscale_creative", "creativity", (), {"creativity": "0.55"}),
    ("upscale_creative", "image", (), {"image": picture((1025, 1024), mode="L", color=(9,))}),
    ("upscale_creative", "image", (), {"image": picture((63, 64))}),
]


@pytest.mark.parametrize(("op", "named", "drop", "changes"), BAD_REQUESTS,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(BAD_REQUESTS)])
def test_invalid_requests_are_400_naming_the_field(client: httpx.Client, op: str, named: str,
                                                   drop: tuple[str, ...],
                                                   changes: dict[str, str | bytes]) -> None:
    # given a valid request made invalid in one way
    texts, uploads = variant(op, drop, **changes)
    # when it is sent
    response = post(client, op, texts, uploads)
    # then it is refused naming the field, and nothing is created or charged
    check_error(response, 400, "bad_request", f"{named}:")
    figures = stats(client)
    assert figures["results_created"] == 0 and figures["billing"] == {}
    assert figures["rejected"] == 1


def test_fields_of_the_wrong_kind_or_given_twice_are_refused(client: httpx.Client) -> None:
    path = f"/v2beta/stable-image/{OPERATIONS['inpaint'].path}"
    cases = [
        ([("prompt", ("p.txt", b"p", "text/plain")), ("image", ("i.png", RGBA_HALF))],
         "prompt:"),
        ([("prompt", (None, "p")), ("image", (None, "i.png"))], "image:"),
        ([("prompt", (None, "p")), ("prompt", (None, "q")), ("image", ("i.png", RGBA_HALF))],
         "prompt: given 2 times"),
    ]
    for parts, mentions in cases:
        check_error(client.post(path, files=parts, headers={"accept": "image/*"}), 400,
                    "bad_request", mentions)
    not_multipart = client.post(path, data={"prompt": "p"}, headers={"accept": "image/*"})
    check_error(not_multipart, 400, "bad_request", "content-type:")


def test_every_problem_is_listed(client: httpx.Client) -> None:
    response = post(client, "inpaint", {"grow_mask": "500", "bogus": "1"}, {"image": IMG})
    check_error(response, 400, "bad_request")
    named = sorted(e.split(":", 1)[0] for e in response.json()["errors"])
    assert named == ["bogus", "grow_mask", "mask", "prompt"]


def test_a_prompt_not_in_english_is_422(client: httpx.Client) -> None:
    response = post(client, "inpaint", {"prompt": "一只猫"}, {"image": RGBA_HALF})
    check_error(response, 422, "invalid_language", "prompt:")
    assert post(client, "inpaint", {"prompt": "café crème, 42 🙂"},
                {"image": RGBA_HALF}).status_code == 200


def test_limits_at_their_edges_are_accepted(client: httpx.Client) -> None:
    cases = [("outpaint", {"right": "2000"}, picture((64, 160)), (2064, 160)),
             ("upscale_fast", {}, picture((32, 32)), (128, 128)),
             ("upscale_fast", {}, picture((1536, 32)), (6144, 128)),
             ("inpaint", {"prompt": "p", "grow_mask": "0"}, picture((64, 64), mode="RGBA"),
              (64, 64))]
    for op, data, image, size in cases:
        img, _, _ = run(client, op, data, {"image": image})
        assert img.size == size, op


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_10_mib_is_413(client: httpx.Client, chunked: bool) -> None:
    # given a request body just over 10 MiB, announced by Content-Length or streamed
    big = b"\0" * (10 * 1024 * 1024)
    probe = httpx.Request("POST", "http://x/", files=[("prompt", (None, "p")),
                                                      ("image", ("i.png", big, "image/png"))])
    body, headers = probe.read(), {"content-type": probe.headers["content-type"],
                                   "accept": "image/*"}
    assert len(body) > 10 * 1024 * 1024

    def stream() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]
    response = client.post(f"/v2beta/stable-image/{OPERATIONS['inpaint'].path}",
                           content=stream() if chunked else body, headers=headers)
    # then it is refused as too large
    check_error(response, 413, "payload_too_large", "10 MiB")
    assert stats(client)["results_created"] == 0


# --------------------------------------------------------------------------- auth and accept


def test_missing_or_wrong_key_is_401(client: httpx.Client, sim: RunningServer) -> None:
    with httpx.Client(base_url=sim.url) as anonymous:
        check_error(post(anonymous, "erase", {}, {"image": RGBA_HALF}), 401, "unauthorized",
                    "authorization")
        wrong = post(anonymous, "erase", {}, {"image": RGBA_HALF},
                     headers={"authorization": "Bearer sk-nope"})
        check_error(wrong, 401, "unauthorized")
        check_error(anonymous.get(f"/v2beta/results/{'0' * 64}"), 401, "unauthorized")
        basic = anonymous.get(f"/v2beta/results/{'0' * 64}", headers={"authorization": KEY})
        check_error(basic, 401, "unauthorized")
    figures = stats(client)
    assert figures["unauthorized"] == 4 and figures["results_created"] == 0


def test_any_key_is_accepted_when_none_is_configured(
        make_sim: Callable[..., RunningServer]) -> None:
    server = make_sim(latency="0")
    with httpx.Client(base_url=server.url) as c:
        ok = post(c, "erase", {}, {"image": RGBA_HALF}, headers={"authorization": "Bearer x"})
        assert ok.status_code == 200
        empty = post(c, "erase", {}, {"image": RGBA_HALF}, headers={"authorization": "Bearer"})
        check_error(empty, 401, "unauthorized")


@pytest.mark.parametrize("accept", ["text/html", "*/*", "image/png"])
def test_other_accept_values_are_400(client: httpx.Client, accept: str) -> None:
    check_error(post(client, "erase", {}, {"image": RGBA_HALF}, accept=accept), 400,
                "bad_request", "accept:")
    # an async submit answers JSON whatever it asks for; its result GET is judged
    result_id = post(client, "upscale_creative", {"prompt": "p"}, {"image": IMG},
                     accept=accept).json()["id"]
    wait_result(client, result_id)
    check_error(result_get(client, result_id, accept), 400, "bad_request", "accept:")


def test_submits_are_logged_with_client_headers_but_never_the_key(
        client: httpx.Client) -> None:
    headers = {"stability-client-id": "editq", "stability-client-user-id": "tenant-1",
               "stability-client-version": "0.1.0"}
    result_id = post(client, "relight", {"background_prompt": "b"}, {"subject_image": IMG},
                     accept="application/json", headers=headers).json()["id"]
    post(client, "erase", {"grow_mask": "2"}, {"image": RGBA_HALF})
    entries = client.get("/_sim/requests?limit=5").json()
    assert KEY not in str(entries) and "authorization" not in str(entries).lower()
    relight, erase = entries
    assert relight["id"] == result_id and relight["operation"] == "relight"
    assert relight["fields"] == {"background_prompt": "b"} and relight["client"] == headers
    assert relight["accept"] == "application/json"
    assert relight["files"]["subject_image"]["bytes"] == len(IMG)
    assert relight["files"]["subject_image"]["content_type"] == "image/png"
    assert len(relight["files"]["subject_image"]["sha256"]) == 64
    assert erase["id"] is None and erase["fields"] == {"grow_mask": "2"}
    assert client.get("/_sim/requests?limit=1").json() == [erase]


# --------------------------------------------------------------------------- rate limit


def test_over_the_limit_is_429_then_a_lockout_then_requests_pass_again(
        make_sim: Callable[..., RunningServer]) -> None:
    # given a limit of 5 requests in 5 s and a 1.5 s lockout
    server = make_sim(latency="0", api_key=KEY, rate_limit=5, rate_window=5, lockout=1.5)
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        # when 5 requests (result GETs count too) are followed by a sixth
        assert [result_get(c, "0" * 64).status_code for _ in range(4)] == [404] * 4
        assert post(c, "erase", {}, {"image": RGBA_HALF}).status_code == 200
        started = time.monotonic()
        over = post(c, "erase", {}, {"image": RGBA_HALF})
        # then the sixth is refused and a lockout starts, refusing everything
        check_error(over, 429, "rate_limit_exceeded")
        assert over.headers["Retry-After"] == "2"
        during = result_get(c, "0" * 64)
        check_error(during, 429, "rate_limit_exceeded")
        assert 1 <= int(during.headers["Retry-After"]) <= 2
        figures = stats(c)  # admin is never limited
        assert (figures["lockouts"], figures["rate_limited"]) == (1, 2)
        assert figures["billing"]["erase"]["results"] == 1
        # and after the lockout requests pass again
        wait_for(lambda: result_get(c, "0" * 64).status_code == 404, 5, "the lockout to end")
        assert time.monotonic() - started >= 1.4
        assert post(c, "erase", {}, {"image": RGBA_HALF}).status_code == 200
        assert stats(c)["lockouts"] == 1


def test_rate_limit_can_be_changed_at_runtime(client: httpx.Client) -> None:
    try:
        changed = client.put("/_sim/rate-limit", json={"rate_limit": 2, "lockout": 30})
        assert changed.json() == {"rate_limit": 2, "rate_window": 10.0, "lockout": 30.0}
        codes = [result_get(client, "0" * 64).status_code for _ in range(4)]
        assert codes == [404, 404, 429, 429]
        assert 29 <= int(result_get(client, "0" * 64).headers["Retry-After"]) <= 30
        bad = client.put("/_sim/rate-limit", json={"rate_limit": 0})
        assert bad.status_code == 400
        assert client.get("/_sim/rate-limit").json()["rate_limit"] == 2
    finally:
        client.post("/_sim/reset")  # back to the configured 150 per 10 s, lockout cleared
    assert client.get("/_sim/rate-limit").json() == {"rate_limit": 150, "rate_window": 10.0,
                                                     "lockout": 60.0}
    assert result_get(client, "0" * 64).status_code == 404


def test_sliding_window_counts_the_last_window_only() -> None:
    limit = SlidingWindowLimit(limit=3, window=10, lockout=60)
    assert [limit.take(t) for t in (0, 1, 2)] == [None, None, None]
    assert limit.take(10.5) is None  # the request at 0 has left the window
    assert limit.take(10.6) == (60, True)  # 1, 2, 10.5 are in it: a fourth starts a lockout
    assert limit.take(30) == (pytest.approx(40.6), False)
    assert [limit.take(t) for t in (70.6, 70.7, 70.8)] == [None, None, None]
    assert limit.take(70.9) == (60, True)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("fault", "endpoint", "status", "name", "retry_after"), [
    ("429", "submit", 429, "rate_limit_exceeded", "1"),
    ("429-bare", "result", 429, "rate_limit_exceeded", None),
    ("500", "submit", 500, "internal_error", None),
    ("502", "result", 502, "bad_gateway", None),
    ("503", "any", 503, "service_unavailable", None)])
def test_scripted_http_faults_answer_once_then_normally(
        client: httpx.Client, fault: str, endpoint: str, status: int, name: str,
        retry_after: str | None) -> None:
    result_id = post(client, "upscale_creative", {"prompt": "p"}, {"image": IMG}).json()["id"]
    wait_result(client, result_id)
    script(client, (endpoint, fault))

    def call() -> httpx.Response:
        if endpoint == "result":
            return result_get(client, result_id)
        return post(client, "upscale_fast", {}, {"image": picture((32, 32))})
    faulted, normal = call(), call()
    check_error(faulted, status, name)
    assert faulted.headers.get("Retry-After") == retry_after
    assert normal.status_code == 200
    figures = stats(client)
    assert figures["faults_injected"] == {fault: 1}
    assert figures["billing"].get("upscale_fast", {"results": 1})["results"] == 1


def test_moderation_is_403_and_not_charged(client: httpx.Client) -> None:
    # given a scripted moderation, which an invalid request does not use up
    script(client, ("submit", "moderation"))
    check_error(post(client, "erase", {}, {"image": IMG}), 400, "bad_request", "mask")
    # when a valid request comes
    response = post(client, "erase", {}, {"image": RGBA_HALF})
    # then it is refused by moderation and not charged; the next one passes
    check_error(response, 403, "content_moderation", "not charged")
    assert post(client, "erase", {}, {"image": RGBA_HALF}).status_code == 200
    figures = stats(client)
    assert figures["moderated"] == 1 and figures["billing"]["erase"]["results"] == 1


def test_moderation_of_an_async_submit_creates_no_result(client: httpx.Client) -> None:
    script(client, ("any", "moderation"))
    check_error(post(client, "relight", {"background_prompt": "b"}, {"subject_image": IMG}),
                403, "content_moderation")
    assert stats(client)["results_created"] == 0


def test_filtered_is_a_blurred_success_and_charged(client: httpx.Client) -> None:
    clear, _, _ = run(client, "inpaint", {"prompt": "p"}, {"image": IMG, "mask": MASK_LEFT})
    script(client, ("submit", "filtered"))
    response = post(client, "inpaint", {"prompt": "p"}, {"image": IMG, "mask": MASK_LEFT})
    blurred, reason, _ = artifact(response, "image/*")
    assert reason == "CONTENT_FILTERED" and blurred.size == clear.size
    # the label's sharp black and white are smeared away
    assert max(ImageStat.Stat(blurred).stddev) < max(ImageStat.Stat(clear).stddev) * 0.8
    figures = stats(client)
    assert figures["filtered"] == 1 and figures["billing"]["inpaint"]["results"] == 2


def test_filtered_async_result_says_so_in_both_modes(client: httpx.Client) -> None:
    script(client, ("submit", "filtered"))
    result_id = post(client, "upscale_creative", {"prompt": "p"}, {"image": IMG}).json()["id"]
    _, reason, _ = artifact(wait_result(client, result_id), "image/*")
    _, json_reason, _ = artifact(result_get(client, result_id, "application/json"),
                                 "application/json")
    assert reason == json_reason == "CONTENT_FILTERED"
    assert stats(client)["billing"]["upscale_creative"]["results"] == 1


def test_expired_answers_404_as_if_the_result_had_expired(client: httpx.Client) -> None:
    result_id = post(client, "relight", {"background_prompt": "b"},
                     {"subject_image": IMG}).json()["id"]
    wait_result(client, result_id)
    script(client, ("any", "expired"))
    post(client, "erase", {}, {"image": RGBA_HALF})  # a submit leaves the step in place
    check_error(result_get(client, result_id), 404, "not_found")
    check_error(result_get(client, result_id), 404, "not_found")  # for good
    assert stats(client)["faults_injected"] == {"expired": 1}


def test_drop_resets_the_connection_and_nothing_is_charged(client: httpx.Client) -> None:
    script(client, ("submit", "drop"))
    with pytest.raises(httpx.TransportError):
        post(client, "erase", {}, {"image": RGBA_HALF})
    figures = stats(client)
    assert figures["billing"] == {} and figures["faults_injected"] == {"drop": 1}
    assert client.get("/_sim/requests").json() == []


def test_drop_after_charges_the_result_the_client_never_hears_of(client: httpx.Client) -> None:
    script(client, ("submit", "drop-after"))
    with pytest.raises(httpx.TransportError):
        post(client, "erase", {}, {"image": RGBA_HALF})
    assert stats(client)["billing"]["erase"]["results"] == 1


def test_hang_holds_the_request_until_the_client_gives_up(client: httpx.Client) -> None:
    script(client, ("submit", "hang"))
    with pytest.raises(httpx.ReadTimeout):
        post(client, "erase", {}, {"image": RGBA_HALF}, timeout=0.5)
    assert post(client, "erase", {}, {"image": RGBA_HALF}).status_code == 200
    assert stats(client)["billing"]["erase"]["results"] == 1


def test_slow_answers_normally_after_the_delay(client: httpx.Client) -> None:
    result_id = post(client, "upscale_creative", {"prompt": "p"}, {"image": IMG}).json()["id"]
    wait_result(client, result_id)
    script(client, ("result", "slow"))
    started = time.monotonic()
    assert result_get(client, result_id).status_code == 200
    assert time.monotonic() - started >= 1.0


def test_random_faults_follow_their_rates_and_endpoints(
        client: httpx.Client, make_sim: Callable[..., RunningServer]) -> None:
    client.post("/_sim/faults", json={"rates": "502=0.5@result"}).raise_for_status()
    codes = [result_get(client, "0" * 64).status_code for _ in range(100)]
    assert 25 <= codes.count(502) <= 75 and set(codes) == {404, 502}
    assert post(client, "erase", {}, {"image": RGBA_HALF}).status_code == 200
    assert client.delete("/_sim/faults").json() == {"script": [], "rates": []}
    for bad in ("expired=0.1@submit", "moderation=0.1@result", "task-1403=0.1", "500=0.1@poll"):
        response = client.post("/_sim/faults", json={"rates": bad})
        assert response.status_code == 400 and bad.split("=")[0] in response.json()["error"]
    # and from the configuration, as `--faults` gives them
    server = make_sim(latency="0", faults="503=1@submit")
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        check_error(post(c, "erase", {}, {"image": RGBA_HALF}), 503, "service_unavailable")
        check_error(result_get(c, "0" * 64), 404, "not_found")


def test_fault_specs_use_each_simulators_vocabulary() -> None:
    rules = parse_faults("moderation=0.1, filtered=0.05@submit,expired=0.01@result,429=0.1")
    assert [(r.kind, r.rate, r.endpoint, r.is_task_fault) for r in rules] == [
        ("moderation", 0.1, "any", True), ("filtered", 0.05, "submit", True),
        ("expired", 0.01, "result", False), ("429", 0.1, "any", False)]
    for bad in ("expired=0.1@submit", "filtered=0.1@result", "500=0.1@poll", "task-5000=1"):
        with pytest.raises(ValueError):
            parse_faults(bad)
    for bad in ("moderation=0.1", "500=0.1@result"):  # WaveSpeed's language is unchanged
        with pytest.raises(ValueError):
            parse_fault_rates(bad)


# --------------------------------------------------------------------------- billing and admin


def test_billing_sums_credits_in_decimal(client: httpx.Client) -> None:
    # given a mix: two fast upscales, an outpaint, a relight, a filtered inpaint, and
    # a moderated, an invalid and a faulted request that must not be charged
    run(client, "upscale_fast", {}, {"image": picture((32, 32))})
    run(client, "upscale_fast", {}, {"image": picture((32, 32))})
    run(client, "outpaint", {"up": "8"}, {"image": IMG})
    run(client, "relight", {"background_prompt": "b"}, {"subject_image": IMG})
    script(client, ("submit", "filtered"), ("submit", "moderation"), ("submit", "500"))
    run(client, "inpaint", {"prompt": "p"}, {"image": RGBA_HALF})
    assert post(client, "upscale_conservative", {}, {"image": IMG}).status_code == 400
    assert post(client, "upscale_conservative", {"prompt": "p"}, {"image": IMG}).status_code \
        == 403
    assert post(client, "upscale_conservative", {"prompt": "p"}, {"image": IMG}).status_code \
        == 500
    # then only the produced results are charged, 1 credit = 0.01 USD
    figures = stats(client)
    assert {op: (b["results"], b["credits"], Decimal(b["usd"]))
            for op, b in figures["billing"].items()} == {
        "upscale_fast": (2, 4, Decimal("0.04")), "outpaint": (1, 4, Decimal("0.04")),
        "relight": (1, 8, Decimal("0.08")), "inpaint": (1, 5, Decimal("0.05"))}
    assert Decimal(figures["billed_usd"]) == Decimal("0.21") and figures["billed_credits"] == 21
    assert figures["requests_by_operation"] == {
        "upscale_fast": 2, "outpaint": 1, "relight": 1, "inpaint": 1, "upscale_conservative": 3}
    assert (figures["moderated"], figures["filtered"], figures["completed"]) == (1, 1, 5)


def test_admin_latency_reset_and_stats(client: httpx.Client) -> None:
    assert client.put("/_sim/latency", json={"latency": "0.2-0.4"}).json() == {
        "latency": "0.2-0.4"}
    assert client.put("/_sim/latency", json={"latency": "soon"}).status_code == 400
    assert client.get("/_sim/latency").json() == {"latency": "0.2-0.4"}
    script(client, ("submit", "500"))
    assert post(client, "relight", {"background_prompt": "b"},
                {"subject_image": IMG}).status_code == 500
    assert client.get("/_sim/faults").json()["script"] == []
    run(client, "relight", {"background_prompt": "b"}, {"subject_image": IMG})
    assert client.post("/_sim/reset").json() == {"reset": True}
    figures = stats(client)
    assert figures["latency"] == "0.05" and figures["billing"] == {}
    assert figures["requests"] == 0 and figures["results_stored"] == 0
    assert client.get("/_sim/requests").json() == []


def test_a_reset_forgets_generations_still_running(client: httpx.Client) -> None:
    # given a sync request held for a second and an async result still running
    client.put("/_sim/latency", json={"latency": "1"}).raise_for_status()
    post(client, "upscale_creative", {"prompt": "p"}, {"image": IMG}).raise_for_status()
    answers: list[int] = []
    worker = threading.Thread(target=lambda: answers.append(
        post(client, "erase", {}, {"image": RGBA_HALF}).status_code))
    worker.start()
    wait_for(lambda: stats(client)["in_flight"] == 2, 5, "two generations in flight")
    # when the simulator is reset meanwhile
    client.post("/_sim/reset").raise_for_status()
    worker.join(10)
    # then the held request is still answered, but nothing from before the reset is counted
    assert answers == [200]
    figures = stats(client)
    assert (figures["in_flight"], figures["completed"], figures["billing"]) == (0, 0, {})


@pytest.mark.timeout(60)
def test_concurrent_sync_requests_are_held_together_and_all_answered(
        make_sim: Callable[..., RunningServer]) -> None:
    # given a simulator holding every sync request one second, and no rate limit in the way
    server = make_sim(latency="1", api_key=KEY, rate_limit=10_000)
    image = picture((64, 64), color=WHITE, subject=RED)
    url = f"{server.url}/v2beta/stable-image/{OPERATIONS['remove_background'].path}"
    count = 200

    # aiohttp's client rather than httpx here: httpx's async pool queues its waiters.
    async def scenario() -> list[tuple[int, bytes]]:
        connector = aiohttp.TCPConnector(limit=count)
        async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
            async def one() -> tuple[int, bytes]:
                form = aiohttp.FormData()
                form.add_field("image", image, filename="i.png", content_type="image/png")
                async with session.post(url, data=form, headers={"accept": "image/*"}) as r:
                    return r.status, await r.read()
            return await asyncio.gather(*[one() for _ in range(count)])

    # when 200 are sent at once (held one after another they would take 200 s, far past
    # this test's timeout; how fast they are held is measured in bench/simulator_load.py)
    answers = asyncio.run(scenario())
    # then every one is answered with its image, and the simulator's books balance
    assert [status for status, _ in answers] == [200] * count
    assert all(Image.open(io.BytesIO(body)).mode == "RGBA" for _, body in answers)
    with httpx.Client(base_url=server.url) as c:
        figures = stats(c)
    assert (figures["completed"], figures["in_flight"]) == (count, 0)


# --------------------------------------------------------------------------- the CLI


def test_cli_help_and_refusal_of_bad_specs() -> None:
    runner = CliRunner()
    result = runner.invoke(sim_cli, ["stability", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--latency", "--faults", "--api-key", "--seed",
                   "--rate-limit", "--rate-window", "--lockout", "--result-ttl", "8200"):
        assert option in result.output
    bad = runner.invoke(sim_cli, ["stability", "--faults", "expired=1@submit"])
    assert bad.exit_code == 2 and "expired" in bad.output
    assert runner.invoke(sim_cli, ["stability", "--rate-limit", "0"]).exit_code == 2


def test_cli_serves_a_simulator_until_terminated() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITQ_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "cli.sim", "stability", "--port", str(port), "--latency", "0.1",
         "--api-key", KEY, "--rate-limit", "50"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/_sim/stats", timeout=1).status_code == 200
            except httpx.TransportError:
                assert child.poll() is None, child.communicate()[1].decode()
                return False
        wait_for(up, 20, "the simulator to listen")
        with httpx.Client(base_url=url, headers=AUTH) as c:
            img, reason, _ = run(c, "upscale_fast", {}, {"image": picture((32, 32))})
            assert (img.size, reason) == ((128, 128), "SUCCESS")
            assert c.get("/_sim/rate-limit").json()["rate_limit"] == 50
    finally:
        child.terminate()
        child.wait(timeout=15)
    assert child.returncode in (0, -15)
