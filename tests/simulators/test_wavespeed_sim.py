"""The WaveSpeed simulator, spoken to over real HTTP on loopback, as editq's client will."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web
from click.testing import CliRunner
from PIL import Image

from cli.sim import sim as sim_cli
from cli.stack import free_port
from simulators.common import (
    Fault,
    FaultPlan,
    Latency,
    RunningServer,
    parse_fault_rates,
    serve_in_thread,
)
from simulators.wavespeed import WaveSpeedSimConfig, create_app
from simulators.wavespeed_models import MODELS
from tests.helpers import b64, image_bytes, wait_for

pytestmark = pytest.mark.timeout(60)

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
GRAY = (128, 128, 128)
IMG = "data:image/png;base64," + b64(image_bytes((64, 48), color=GRAY))
BARE = b64(image_bytes((40, 40), "JPEG", color=GRAY))
MASK = "data:image/png;base64," + b64(image_bytes((64, 48), mode="RGBA", color=(0, 0, 0, 0)))
TERMINAL = ("completed", "failed")


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningServer]:
    config = WaveSpeedSimConfig(api_key=KEY, latency="0.2", seed=7, sync_timeout=5,
                                processing_after=0.05, slow_seconds=1.0, webhook_backoff=0.1,
                                webhook_secret="s3cret-for-tests")
    with serve_in_thread(create_app(config)) as server:
        yield server


@pytest.fixture
def client(sim: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, headers=AUTH, timeout=10) as c:
        c.post("/_sim/reset").raise_for_status()
        c.put("/_sim/latency", json={"latency": "0.2"}).raise_for_status()
        yield c


@pytest.fixture
def make_sim() -> Iterator[Callable[..., RunningServer]]:
    """A private simulator for tests that need another configuration."""
    servers: list[RunningServer] = []

    def start(**config: Any) -> RunningServer:
        servers.append(serve_in_thread(create_app(WaveSpeedSimConfig(**config))))
        return servers[-1]
    yield start
    for server in servers:
        server.stop()


def submit(c: httpx.Client, model: str, body: dict[str, Any], **params: str) -> httpx.Response:
    return c.post(f"/api/v3/{model}", json=body, params=params)


def wait_done(c: httpx.Client, task_id: str, timeout: float = 10) -> dict[str, Any]:
    def terminal() -> dict[str, Any] | None:
        data: dict[str, Any] = c.get(f"/api/v3/predictions/{task_id}/result").json()["data"]
        return data if data["status"] in TERMINAL else None
    return wait_for(terminal, timeout, f"task {task_id} to finish", interval=0.02)


def run_task(c: httpx.Client, model: str, body: dict[str, Any]) -> dict[str, Any]:
    response = submit(c, model, body)
    assert response.status_code == 200, response.text
    return wait_done(c, response.json()["data"]["id"])


def download(c: httpx.Client, url: str) -> tuple[Image.Image, str]:
    response = c.get(url)
    assert response.status_code == 200, response.text
    img = Image.open(io.BytesIO(response.content))
    img.load()
    return img, response.headers["content-type"]


def stats(c: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = c.get("/_sim/stats").json()
    return result


# --------------------------------------------------------------------------- a task's life


def test_task_moves_created_processing_completed_and_output_follows_size(
        client: httpx.Client) -> None:
    # given a task that runs one second
    client.put("/_sim/latency", json={"latency": "1"})
    # when it is submitted
    response = submit(client, "wavespeed-ai/qwen-image/edit",
                      {"prompt": "make it teal", "image": IMG, "size": "512*384"})
    # then it is created at once, with the provider's envelope and a result URL
    body = response.json()
    assert response.status_code == 200 and body["code"] == 200 and body["message"] == "success"
    data = body["data"]
    assert data["status"] == "created" and data["outputs"] == [] and data["error"] == ""
    assert len(data["id"]) == 32 and int(data["id"], 16) >= 0
    assert data["urls"]["get"] == f"{client.base_url}/api/v3/predictions/{data['id']}/result"
    assert data["model"] == "wavespeed-ai/qwen-image/edit" and "T" in data["created_at"]
    seen = [data["status"]]

    def completed() -> dict[str, Any] | None:
        polled: dict[str, Any] = client.get(data["urls"]["get"]).json()["data"]
        if polled["status"] != seen[-1]:
            seen.append(polled["status"])
        return polled if polled["status"] == "completed" else None
    done = wait_for(completed, 10, "completion", interval=0.02)
    assert seen == ["created", "processing", "completed"]
    assert done["has_nsfw_contents"] == [False] and done["timings"]["inference"] == 1000
    # and the output is a 512x384 JPEG (qwen's default format), visibly tinted
    (url,) = done["outputs"]
    img, content_type = download(client, url)
    assert (img.format, img.size, content_type) == ("JPEG", (512, 384), "image/jpeg")
    centre = img.convert("RGB").getpixel((256, 192))
    assert isinstance(centre, tuple)
    assert max(abs(a - b) for a, b in zip(centre, GRAY, strict=True)) > 30
    # and the bare poll path answers the same task
    bare = client.get(f"/api/v3/predictions/{data['id']}").json()["data"]
    assert bare["status"] == "completed" and bare["outputs"] == done["outputs"]


def test_zoom_out_pastes_the_image_smaller_on_the_requested_canvas(client: httpx.Client) -> None:
    done = run_task(client, "wavespeed-ai/image-zoom-out",
                    {"image": IMG, "width": 512, "height": 384})
    img, _ = download(client, done["outputs"][0])
    assert (img.format, img.size) == ("PNG", (512, 384))


def test_output_format_png_is_honoured(client: httpx.Client) -> None:
    done = run_task(client, "google/nano-banana-pro/edit-ultra",
                    {"prompt": "p", "images": [BARE], "output_format": "png"})
    assert done["outputs"][0].endswith(".png")
    img, content_type = download(client, done["outputs"][0])
    assert (img.format, content_type, img.size) == ("PNG", "image/png", (40, 40))


# --------------------------------------------------------------------------- per model

VALID: dict[str, tuple[dict[str, Any], str, tuple[int, int] | None]] = {
    "wavespeed-ai/qwen-image/edit": (
        {"prompt": "p", "image": IMG, "size": "512*512", "seed": 5, "output_format": "png"},
        "PNG", (512, 512)),
    "wavespeed-ai/qwen-image/edit-plus": (
        {"prompt": "p", "images": [IMG, BARE, IMG], "size": "300*300"}, "JPEG", (300, 300)),
    "wavespeed-ai/step1x-edit": (
        {"prompt": "p", "image": IMG, "negative_prompt": "blur", "guidance_scale": 4,
         "num_inference_steps": 30, "seed": -1}, "PNG", (64, 48)),
    "wavespeed-ai/hidream-e1-full": (
        {"prompt": "p", "image": IMG, "seed": 1, "output_format": "webp"}, "WEBP", (64, 48)),
    "bytedance/seededit-v3": (
        {"prompt": "p", "image": IMG, "guidance_scale": 0.5, "seed": 2}, "PNG", None),
    "alibaba/wan-2.5/image-edit": (
        {"prompt": "p", "images": [IMG, IMG], "size": "384*400", "seed": 3}, "PNG", (384, 400)),
    "wavespeed-ai/flux-kontext-pro": (
        {"prompt": "p", "image": IMG, "guidance_scale": 3.5, "safety_tolerance": "2"},
        "PNG", None),
    "wavespeed-ai/flux-kontext-pro/multi": (
        {"prompt": "p", "images": [IMG] * 5, "seed": 1, "guidance_scale": 15,
         "aspect_ratio": "21:9"}, "PNG", None),
    "wavespeed-ai/flux-kontext-max": (
        {"prompt": "p", "image": IMG, "seed": 1, "guidance_scale": 20, "aspect_ratio": "9:21"},
        "PNG", None),
    "ideogram-ai/ideogram-character": (
        {"prompt": "p", "image": IMG, "style": "Fiction", "rendering_speed": "Turbo",
         "aspect_ratio": "4:3"}, "PNG", None),
    "google/nano-banana-pro/edit-ultra": (
        {"prompt": "p", "images": [IMG] * 14, "aspect_ratio": "4:5", "resolution": "8k",
         "output_format": "jpeg"}, "JPEG", None),
    "openai/gpt-image-1": (
        {"prompt": "p", "image": IMG, "quality": "high", "size": "1024*1536",
         "mask_image": MASK}, "PNG", (1024, 1536)),
    "wavespeed-ai/z-image/turbo-inpaint": (
        {"prompt": "p", "image": IMG, "mask_image": MASK, "size": "256*256", "seed": 1,
         "strength": 0.7, "output_format": "png"}, "PNG", (256, 256)),
    "wavespeed-ai/image-zoom-out": ({"image": IMG, "width": 256, "height": 1536}, "PNG",
                                    (256, 1536)),
}

OUT_OF_RANGE: dict[str, tuple[str, Any]] = {
    "wavespeed-ai/qwen-image/edit": ("size", "100*100"),
    "wavespeed-ai/qwen-image/edit-plus": ("seed", 2_147_483_648),
    "wavespeed-ai/step1x-edit": ("num_inference_steps", 51),
    "wavespeed-ai/hidream-e1-full": ("output_format", "gif"),
    "bytedance/seededit-v3": ("guidance_scale", 1.5),
    "alibaba/wan-2.5/image-edit": ("size", "5001*400"),
    "wavespeed-ai/flux-kontext-pro": ("safety_tolerance", 2),
    "wavespeed-ai/flux-kontext-pro/multi": ("aspect_ratio", "5:4"),
    "wavespeed-ai/flux-kontext-max": ("guidance_scale", 0.5),
    "ideogram-ai/ideogram-character": ("rendering_speed", "Fast"),
    "google/nano-banana-pro/edit-ultra": ("resolution", "2k"),
    "openai/gpt-image-1": ("size", "512*512"),
    "wavespeed-ai/z-image/turbo-inpaint": ("strength", 1.5),
    "wavespeed-ai/image-zoom-out": ("width", 2000),
}


def test_the_table_covers_the_fourteen_models() -> None:
    assert set(MODELS) == set(VALID) == set(OUT_OF_RANGE) and len(MODELS) == 14


@pytest.mark.parametrize("model", sorted(VALID))
def test_a_valid_request_completes_with_the_models_output(client: httpx.Client,
                                                          model: str) -> None:
    body, fmt, size = VALID[model]
    done = run_task(client, model, body)
    assert done["status"] == "completed", done
    img, _ = download(client, done["outputs"][0])
    assert img.format == fmt
    if size is not None:
        assert img.size == size


@pytest.mark.parametrize("model", sorted(VALID))
def test_out_of_range_and_unknown_fields_are_refused_naming_the_field(
        client: httpx.Client, model: str) -> None:
    body = VALID[model][0]
    field, bad = OUT_OF_RANGE[model]
    for wrong, named in (({**body, field: bad}, field),
                         ({**body, "bogus_field": 1}, "bogus_field")):
        response = submit(client, model, wrong)
        assert response.status_code == 400
        assert response.json()["code"] == 400 and response.json()["data"] is None
        assert named in response.json()["message"]
    assert stats(client)["tasks_created"] == 0


@pytest.mark.parametrize("model", sorted(VALID))
def test_missing_required_fields_are_refused(client: httpx.Client, model: str) -> None:
    body = VALID[model][0]
    image_field = "images" if "images" in body else "image"
    required = [image_field] + (["prompt"] if "prompt" in body else [])
    required += ["mask_image"] if model == "wavespeed-ai/z-image/turbo-inpaint" else []
    for name in required:
        response = submit(client, model, {k: v for k, v in body.items() if k != name})
        assert response.status_code == 400 and name in response.json()["message"]


@pytest.mark.parametrize(("model", "limit"), [
    ("wavespeed-ai/qwen-image/edit-plus", 3), ("alibaba/wan-2.5/image-edit", 2),
    ("wavespeed-ai/flux-kontext-pro/multi", 5), ("google/nano-banana-pro/edit-ultra", 14)])
def test_more_images_than_the_model_takes_is_refused(client: httpx.Client, model: str,
                                                     limit: int) -> None:
    response = submit(client, model, {"prompt": "p", "images": [IMG] * (limit + 1)})
    assert response.status_code == 400
    assert "images" in response.json()["message"] and str(limit) in response.json()["message"]


def test_model_specific_strictness(client: httpx.Client) -> None:
    # zoom-out takes no prompt; flux-kontext-pro takes no seed; a list is not one image
    cases = [("wavespeed-ai/image-zoom-out", {"image": IMG, "prompt": "p"}, "prompt"),
             ("wavespeed-ai/flux-kontext-pro", {"prompt": "p", "image": IMG, "seed": 1}, "seed"),
             ("wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": [IMG]}, "image"),
             ("wavespeed-ai/qwen-image/edit", {"prompt": "", "image": IMG}, "prompt"),
             ("wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": IMG, "seed": True},
              "seed"),
             ("wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": "bm90IGFuIGltYWdl"},
              "image"),
             ("wavespeed-ai/qwen-image/edit-plus", {"prompt": "p", "images": [IMG, "data:x"]},
              "images[1]"),
             ("wavespeed-ai/qwen-image/edit",
              {"prompt": "p", "image": IMG, "enable_sync_mode": "yes"}, "enable_sync_mode")]
    for model, body, named in cases:
        response = submit(client, model, body)
        assert response.status_code == 400, (model, body)
        assert named in response.json()["message"], response.json()
    not_json = client.post("/api/v3/wavespeed-ai/qwen-image/edit", content=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["code"] == 400


# --------------------------------------------------------------------------- errors


def test_auth_unknown_model_and_unknown_task(client: httpx.Client, sim: RunningServer) -> None:
    body = {"prompt": "p", "image": IMG}
    wrong = httpx.post(f"{sim.url}/api/v3/wavespeed-ai/qwen-image/edit", json=body,
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {"code": 401, "message": "Invalid API key", "data": None}
    missing = httpx.get(f"{sim.url}/api/v3/predictions/{'0' * 32}/result")
    assert missing.status_code == 401 and missing.json()["code"] == 401
    unknown_model = submit(client, "acme/no-such-model", body)
    assert unknown_model.status_code == 404 and unknown_model.json()["code"] == 404
    unknown_task = client.get(f"/api/v3/predictions/{'0' * 32}/result")
    assert unknown_task.status_code == 404 and unknown_task.json()["data"] is None
    assert client.get("/api/v3/nothing/here").json()["code"] == 405
    assert stats(client)["tasks_created"] == 0


def test_any_key_is_accepted_when_none_is_configured(make_sim: Callable[..., RunningServer],
                                                     ) -> None:
    server = make_sim(latency="0")
    with httpx.Client(base_url=server.url) as c:
        ok = c.post("/api/v3/wavespeed-ai/image-zoom-out", json={"image": IMG},
                    headers={"Authorization": "Bearer whatever"})
        assert ok.status_code == 200
        assert c.post("/api/v3/wavespeed-ai/image-zoom-out", json={"image": IMG}).status_code \
            == 401


def test_rate_limit_answers_429_with_retry_after(make_sim: Callable[..., RunningServer]) -> None:
    server = make_sim(latency="0", rate_limit_per_minute=2)
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        codes = [submit(c, "wavespeed-ai/image-zoom-out", {"image": IMG}) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert 1 <= int(codes[2].headers["Retry-After"]) <= 60 and codes[2].json()["code"] == 429


# --------------------------------------------------------------------------- modes


def test_sync_mode_answers_the_completed_task_in_one_post(client: httpx.Client) -> None:
    response = submit(client, "wavespeed-ai/flux-kontext-max",
                      {"prompt": "p", "image": IMG, "enable_sync_mode": True})
    data = response.json()["data"]
    assert response.status_code == 200 and data["status"] == "completed"
    img, _ = download(client, data["outputs"][0])
    assert img.format == "PNG"
    assert stats(client)["polls"] == 0


def test_sync_mode_timeout_answers_processing_5004_and_the_task_finishes(
        make_sim: Callable[..., RunningServer]) -> None:
    server = make_sim(latency="1", sync_timeout=0.2)
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        response = submit(c, "wavespeed-ai/qwen-image/edit",
                          {"prompt": "p", "image": IMG, "enable_sync_mode": True})
        data = response.json()["data"]
        assert response.status_code == 200
        assert (data["status"], data["code"]) == ("processing", 5004)
        assert data["urls"]["get"].endswith(f"/api/v3/predictions/{data['id']}/result")
        assert wait_done(c, data["id"])["status"] == "completed"


def test_base64_output_and_its_refusal_with_a_webhook(client: httpx.Client) -> None:
    done = run_task(client, "wavespeed-ai/qwen-image/edit",
                    {"prompt": "p", "image": IMG, "enable_base64_output": True})
    (encoded,) = done["outputs"]
    assert not encoded.startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(encoded))).format == "JPEG"
    for body, params in (({"enable_base64_output": True}, {"webhook": "http://127.0.0.1:9/h"}),
                         ({"enable_base64_output": True, "webhook_url": "http://127.0.0.1:9/h"},
                          {})):
        response = submit(client, "wavespeed-ai/qwen-image/edit",
                          {"prompt": "p", "image": IMG, **body}, **params)
        assert response.status_code == 400 and "webhook" in response.json()["message"]


# --------------------------------------------------------------------------- webhooks


class Receiver:
    """A webhook endpoint on loopback that can be told to fail the first N deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict[str, str], str]] = []
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.server = serve_in_thread(app)
        self.url = f"{self.server.url}/hook"

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.text()
        with self.lock:
            self.received.append((dict(request.headers), raw))
            attempt = len(self.received)
        return web.Response(status=500 if attempt <= self.fail_first else 204)

    def deliveries(self, count: int) -> list[tuple[dict[str, str], str]]:
        def enough() -> list[tuple[dict[str, str], str]] | None:
            with self.lock:
                return list(self.received) if len(self.received) >= count else None
        return wait_for(enough, 10, f"{count} webhook deliveries")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.stop()


def check_signature(secret: str, headers: dict[str, str], raw: str) -> None:
    key = secret.removeprefix("whsec_").encode()
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{raw}".encode()
    expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
    assert headers["webhook-signature"] == f"v3,{expected}"
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300


def test_webhooks_are_signed_and_carry_the_input(client: httpx.Client,
                                                 receiver: Receiver) -> None:
    secret = client.get("/api/v3/webhook/secret").json()["data"]["secret"]
    assert secret == "whsec_s3cret-for-tests"
    body = {"prompt": "p", "image": IMG}
    # given a completed task (webhook in the query) and a failed one (webhook in the body)
    client.post("/_sim/faults", json={"script": [{"endpoint": "submit", "fault": "task-1200"}]})
    first = submit(client, "wavespeed-ai/step1x-edit", body, webhook=receiver.url).json()["data"]
    second = submit(client, "wavespeed-ai/step1x-edit",
                    {**body, "webhook_url": receiver.url}).json()["data"]
    # then each is delivered once, without anyone polling, signed as documented
    deliveries = receiver.deliveries(2)
    by_id = {json.loads(raw)["id"]: (headers, raw) for headers, raw in deliveries}
    assert set(by_id) == {first["id"], second["id"]}
    for headers, raw in by_id.values():
        check_signature(secret, headers, raw)
    failed = json.loads(by_id[first["id"]][1])
    assert (failed["status"], failed["code"], failed["outputs"]) == ("failed", 1200, [])
    completed = json.loads(by_id[second["id"]][1])
    assert completed["status"] == "completed" and len(completed["outputs"]) == 1
    assert completed["input"] == {**body, "webhook_url": receiver.url}
    assert stats(client)["polls"] == 0
    events = {(w["task_id"], w["event"], w["status"]) for w in stats(client)["webhooks"]}
    assert events == {(first["id"], "failed", 204), (second["id"], "completed", 204)}


def test_webhooks_are_retried_and_never_sent_off_loopback(client: httpx.Client) -> None:
    hook = Receiver(fail_first=2)
    try:
        submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG}, webhook=hook.url)
        headers = [h for h, _ in hook.deliveries(3)]
        assert len({h["webhook-id"] for h in headers}) == 1
        submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG},
               webhook="http://example.com/hook")
        wait_for(lambda: len(stats(client)["webhooks"]) == 4, 10, "the refusal")
        records = [(w["status"], w["attempt"]) for w in stats(client)["webhooks"]]
        assert records == [(500, 1), (500, 2), (204, 3), ("refused", 0)]
    finally:
        hook.server.stop()


# --------------------------------------------------------------------------- uploads


def test_uploaded_files_are_served_and_usable_as_inputs(client: httpx.Client) -> None:
    data = image_bytes((80, 60), color=GRAY)
    ticket = client.post("/api/v3/media/uploads",
                         json={"filename": "in.png", "size": len(data),
                               "content_type": "image/png"}).json()["data"]
    upload = ticket["upload"]
    assert upload["method"] == "PUT"
    put = httpx.put(upload["url"], content=data, headers=upload["headers"])
    assert put.status_code == 200
    served = httpx.get(ticket["download_url"])
    assert served.content == data and served.headers["content-type"] == "image/png"
    done = run_task(client, "wavespeed-ai/image-zoom-out",
                    {"image": ticket["download_url"], "width": 300, "height": 300})
    assert done["status"] == "completed"
    assert download(client, done["outputs"][0])[0].size == (300, 300)
    legacy = client.post("/api/v3/media/upload/binary",
                         files={"file": ("b.png", data, "image/png")}).json()["data"]
    assert httpx.get(legacy["download_url"]).content == data


def test_unreachable_or_undecodable_input_urls_fail_the_task(client: httpx.Client,
                                                            sim: RunningServer) -> None:
    ticket = client.post("/api/v3/media/uploads",
                         json={"filename": "t.txt", "size": 4}).json()["data"]
    httpx.put(ticket["upload"]["url"], content=b"text")
    cases = [("https://example.com/cat.png", 1402), (f"{sim.url}/media/{'0' * 32}/x.png", 1402),
             (ticket["download_url"], 1401)]
    for url, code in cases:
        done = run_task(client, "wavespeed-ai/image-zoom-out", {"image": url})
        assert (done["status"], done["code"]) == ("failed", code), url
        assert done["error"]


# --------------------------------------------------------------------------- faults


def script(c: httpx.Client, *steps: tuple[str, str]) -> None:
    response = c.post("/_sim/faults",
                      json={"script": [{"endpoint": e, "fault": f} for e, f in steps]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("fault", "endpoint", "status", "retry_after"), [
    ("429", "submit", 429, "1"), ("429-bare", "submit", 429, None),
    ("500", "poll", 500, None), ("502", "poll", 502, None), ("503", "output", 503, None)])
def test_scripted_http_faults_answer_once_then_normally(
        client: httpx.Client, fault: str, endpoint: str, status: int,
        retry_after: str | None) -> None:
    done = run_task(client, "wavespeed-ai/image-zoom-out", {"image": IMG})
    script(client, (endpoint, fault))

    def call() -> httpx.Response:
        if endpoint == "submit":
            return submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG})
        if endpoint == "poll":
            return client.get(f"/api/v3/predictions/{done['id']}/result")
        return client.get(done["outputs"][0])
    faulted, normal = call(), call()
    assert faulted.status_code == status
    assert faulted.json() == {"code": status, "message": faulted.json()["message"], "data": None}
    assert faulted.headers.get("Retry-After") == retry_after
    assert normal.status_code == 200
    assert stats(client)["faults_injected"] == {fault: 1}


def test_hang_holds_the_request_until_the_client_gives_up(client: httpx.Client) -> None:
    script(client, ("submit", "hang"))
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/v3/wavespeed-ai/image-zoom-out", json={"image": IMG}, timeout=0.5)
    assert submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG}).status_code == 200
    assert stats(client)["tasks_created"] == 1


def test_slow_answers_normally_after_the_delay(client: httpx.Client) -> None:
    script(client, ("poll", "slow"))
    task_id = submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG}).json()["data"]["id"]
    started = time.monotonic()
    response = client.get(f"/api/v3/predictions/{task_id}/result")
    assert response.status_code == 200 and time.monotonic() - started >= 1.0


def test_drop_resets_the_connection_before_any_task_exists(client: httpx.Client) -> None:
    script(client, ("submit", "drop"))
    with pytest.raises(httpx.TransportError):
        submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG})
    figures = stats(client)
    assert figures["tasks_created"] == 0 and figures["faults_injected"] == {"drop": 1}
    assert client.get("/_sim/requests").json() == []


def test_drop_after_creates_the_task_the_client_never_hears_of(client: httpx.Client) -> None:
    script(client, ("submit", "drop-after"))
    body = {"image": IMG, "width": 256}
    with pytest.raises(httpx.TransportError):
        submit(client, "wavespeed-ai/image-zoom-out", body)
    (entry,) = client.get("/_sim/requests?limit=5").json()
    assert entry["model_path"] == "wavespeed-ai/image-zoom-out" and entry["body"] == body
    assert "Authorization" not in json.dumps(entry) and entry["id"]
    assert wait_done(client, entry["id"])["status"] == "completed"
    assert stats(client)["billing"]["wavespeed-ai/image-zoom-out"]["images"] == 1


@pytest.mark.parametrize("code", [1403, 5003])
def test_task_faults_fail_the_task_with_their_code(client: httpx.Client, code: int) -> None:
    # an invalid submit does not use up the scripted task fault
    script(client, ("submit", f"task-{code}"))
    assert submit(client, "wavespeed-ai/image-zoom-out", {}).status_code == 400
    response = submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG})
    assert response.status_code == 200
    done = wait_done(client, response.json()["data"]["id"])
    assert (done["status"], done["code"], done["outputs"]) == ("failed", code, [])
    assert done["error"] and stats(client)["billing"] == {}


def test_random_faults_follow_their_rates_and_endpoints(client: httpx.Client) -> None:
    task_id = submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG}).json()["data"]["id"]
    client.post("/_sim/faults", json={"rates": "502=0.5@poll"})
    codes = [client.get(f"/api/v3/predictions/{task_id}").status_code for _ in range(200)]
    assert 60 <= codes.count(502) <= 140 and set(codes) == {200, 502}
    assert submit(client, "wavespeed-ai/image-zoom-out", {"image": IMG}).status_code == 200
    assert client.delete("/_sim/faults").json() == {"script": [], "rates": []}
    bad = client.post("/_sim/faults", json={"rates": "drop-after=0.1@poll"})
    assert bad.status_code == 400 and "drop-after" in bad.json()["error"]


def test_spec_parsers_and_fault_plan_order() -> None:
    assert Latency.parse("5").sample(__import__("random").Random(1)) == 5
    assert Latency.parse("2-8").kind == "uniform" and Latency.parse("normal:5,1").b == 1
    for bad in ("-1", "8-2", "normal:5", "fast"):
        with pytest.raises(ValueError):
            Latency.parse(bad)
    rules = parse_fault_rates("500=0.1, 429=0.05@poll,task-5003=0.02,hang=0.02@submit")
    assert [(r.kind, r.rate, r.endpoint) for r in rules] == [
        ("500", 0.1, "any"), ("429", 0.05, "poll"), ("task-5003", 0.02, "any"),
        ("hang", 0.02, "submit")]
    for bad in ("teapot=0.1", "500", "500=2", "task-1403=0.1@poll", "500=0.1@nowhere"):
        with pytest.raises(ValueError):
            parse_fault_rates(bad)
    plan = FaultPlan(__import__("random").Random(1))
    plan.script.extend([Fault("task-1403", "any"), Fault("500", "poll"), Fault("503")])
    assert plan.request_fault("submit") is None  # the task fault waits for a task
    assert plan.request_fault("poll") == "500"
    assert plan.task_fault() == "task-1403"
    assert plan.request_fault("submit") == "503" and plan.request_fault("submit") is None


# --------------------------------------------------------------------------- billing


def test_billing_counts_completed_images_at_their_prices(client: httpx.Client) -> None:
    script(client, ("submit", "task-1403"))
    failed = run_task(client, "wavespeed-ai/flux-kontext-max", {"prompt": "p", "image": IMG})
    assert failed["status"] == "failed"
    bodies = [("ideogram-ai/ideogram-character",
               {"prompt": "p", "image": IMG, "rendering_speed": "Quality"}),
              ("openai/gpt-image-1",
               {"prompt": "p", "image": IMG, "quality": "high", "size": "1536*1024"}),
              ("openai/gpt-image-1", {"prompt": "p", "image": IMG, "quality": "low"}),
              ("google/nano-banana-pro/edit-ultra", {"prompt": "p", "images": [IMG]}),
              ("wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": IMG}),
              ("wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": IMG})]
    for model, body in bodies:
        assert run_task(client, model, body)["status"] == "completed"
    billing = stats(client)["billing"]
    assert {path: (b["images"], Decimal(b["usd"])) for path, b in billing.items()} == {
        "ideogram-ai/ideogram-character": (1, Decimal("0.20")),
        "openai/gpt-image-1": (2, Decimal("0.261")),
        "google/nano-banana-pro/edit-ultra": (1, Decimal("0.15")),
        "wavespeed-ai/qwen-image/edit": (2, Decimal("0.04")),
    }
    assert Decimal(stats(client)["billed_usd"]) == Decimal("0.651")


# --------------------------------------------------------------------------- scale


@pytest.mark.timeout(60)
def test_a_thousand_tasks_are_held_in_flight_at_once(
        make_sim: Callable[..., RunningServer]) -> None:
    # given a simulator whose tasks take ten minutes: none can finish during the test, so
    # what is counted does not depend on how fast this machine sends (the figures of a
    # thousand tasks finishing are measured in bench/simulator_load.py)
    server = make_sim(latency="600", api_key=KEY)
    small = "data:image/png;base64," + b64(image_bytes((8, 8)))

    async def scenario() -> list[httpx.Response]:
        gate = asyncio.Semaphore(8)  # httpx's pool slows down with a long queue of waiters
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=20,
                                     limits=httpx.Limits(max_connections=8)) as c:
            async def submit() -> httpx.Response:
                async with gate:
                    return await c.post("/api/v3/wavespeed-ai/image-zoom-out",
                                        json={"image": small})
            return await asyncio.gather(*[submit() for _ in range(1000)])

    # when a thousand are submitted at once
    responses = asyncio.run(scenario())

    # then each is accepted with an id of its own, and all of them are in flight together
    assert [r.status_code for r in responses] == [200] * 1000
    ids = {r.json()["data"]["id"] for r in responses}
    assert len(ids) == 1000
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        figures = stats(c)
        assert (figures["in_flight"], figures["completed"]) == (1000, 0)
        # and a look at any of them finds it still running, with no outputs yet
        for task_id in sorted(ids)[:20]:
            data = c.get(f"/api/v3/predictions/{task_id}/result").json()["data"]
            assert data["status"] in ("created", "processing") and data["outputs"] == []


# --------------------------------------------------------------------------- the CLI


def test_cli_help_and_refusal_of_bad_specs() -> None:
    runner = CliRunner()
    result = runner.invoke(sim_cli, ["wavespeed", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--latency", "--faults", "--api-key"):
        assert option in result.output
    bad = runner.invoke(sim_cli, ["wavespeed", "--faults", "teapot=1"])
    assert bad.exit_code == 2 and "teapot" in bad.output


def test_cli_serves_a_simulator_until_terminated() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDITQ_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "cli.sim", "wavespeed", "--port", str(port), "--latency", "0.1",
         "--api-key", KEY], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
            response = submit(c, "wavespeed-ai/qwen-image/edit", {"prompt": "p", "image": IMG})
            assert response.status_code == 200
            assert wait_done(c, response.json()["data"]["id"])["status"] == "completed"
    finally:
        child.terminate()
        child.wait(timeout=15)
    assert child.returncode in (0, -15)


def test_start_up_fault_rates_are_in_force_and_survive_a_reset(
        make_sim: Callable[..., RunningServer]) -> None:
    # given a simulator started with --faults
    server = make_sim(faults="500=0.5@submit", api_key=KEY)
    with httpx.Client(base_url=server.url) as c:
        # then its rates are in force, and a reset (which forgets counters) keeps them
        assert c.get("/_sim/faults").json()["rates"] != []
        c.post("/_sim/reset")
        assert c.get("/_sim/faults").json()["rates"] != []
