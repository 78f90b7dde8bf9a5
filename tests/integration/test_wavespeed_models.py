"""Each of the 14 WaveSpeed models end to end: API, worker, simulator over HTTP, S3.

The request the simulator received is checked against the model's own fields,
and what editq charged against what the simulator says it billed.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from shared.db import session_scope
from shared.models import Job
from tests.conftest import SIM_KEY, Live
from tests.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass(frozen=True)
class Case:
    model: str
    operation: str = "general_edit"
    images: int = 1
    mask: bool = False
    prompt: str | None = "make the sky purple"
    negative_prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # What the simulator must have received besides prompt, images and mask.
    sent: dict[str, Any] = field(default_factory=dict)
    price: Decimal = Decimal("0")


CASES = [
    Case("qwen-edit", options={"width": 512, "height": 384, "output_format": "png"},
         sent={"size": "512*384", "output_format": "png"}, price=Decimal("0.02")),
    Case("qwen-edit-plus", "multi_image_edit", images=2, options={"seed": 42},
         sent={"seed": 42}, price=Decimal("0.02")),
    Case("step1x-edit", negative_prompt="blurry",
         options={"steps": 20, "guidance_scale": 6},
         sent={"num_inference_steps": 20, "guidance_scale": 6, "negative_prompt": "blurry"},
         price=Decimal("0.03")),
    Case("hidream-e1-full", options={"output_format": "webp"},
         sent={"output_format": "webp"}, price=Decimal("0.024")),
    Case("seededit-v3", options={"guidance_scale": 0.7}, sent={"guidance_scale": 0.7},
         price=Decimal("0.027")),
    Case("wan-2.5-edit", images=2, options={"size": "1024*768"}, sent={"size": "1024*768"},
         price=Decimal("0.035")),
    Case("flux-kontext-pro", "text_edit", options={"guidance_scale": 4, "safety_tolerance": "3"},
         sent={"guidance_scale": 4, "safety_tolerance": "3"}, price=Decimal("0.04")),
    Case("flux-kontext-pro-multi", "multi_image_edit", images=3,
         options={"aspect_ratio": "16:9"}, sent={"aspect_ratio": "16:9"},
         price=Decimal("0.04")),
    Case("flux-kontext-max", options={"aspect_ratio": "1:1", "seed": 5},
         sent={"aspect_ratio": "1:1", "seed": 5}, price=Decimal("0.08")),
    Case("ideogram-character", "character",
         options={"rendering_speed": "Quality", "style": "Realistic"},
         sent={"rendering_speed": "Quality", "style": "Realistic"}, price=Decimal("0.20")),
    Case("nano-banana-pro-edit-ultra", images=2,
         options={"resolution": "8k", "aspect_ratio": "4:3"},
         sent={"resolution": "8k", "aspect_ratio": "4:3"}, price=Decimal("0.18")),
    Case("gpt-image-1-edit", "inpaint", mask=True,
         options={"quality": "high", "size": "1024*1536"},
         sent={"quality": "high", "size": "1024*1536"}, price=Decimal("0.25")),
    Case("z-image-turbo-inpaint", "inpaint", mask=True, options={"strength": 0.8},
         sent={"strength": 0.8}, price=Decimal("0.02")),
    Case("image-zoom-out", "outpaint", prompt=None, options={"width": 512, "height": 512},
         sent={"width": 512, "height": 512}, price=Decimal("0.02")),
]


def sim_request(live: Live, request_id: str) -> dict[str, Any]:
    log = httpx.get(f"{live.sim_url}/_sim/requests", params={"limit": 1000}, timeout=10).json()
    entries = log["requests"] if isinstance(log, dict) else log
    return next(entry for entry in entries if entry.get("id") == request_id)


def decoded(uri: str) -> bytes:
    """An input as the simulator was sent it: a presigned URL of our storage (the stack
    lets providers fetch the inputs, EDITQ_PROVIDER_FETCHES_INPUTS), or a data URI."""
    if uri.startswith("http"):
        return httpx.get(uri, timeout=10).raise_for_status().content
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    return base64.b64decode(uri.split(",", 1)[1])


@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
def test_model_runs_end_to_end(live: Live, case: Case) -> None:
    # given distinct input images (and a mask) for this model
    client = live.client(f"ws-{case.model}")
    images = [image_bytes((96 + 8 * n, 64), color=(40 * n, 120, 200)) for n in range(case.images)]
    mask = image_bytes((96, 64), color=(255, 255, 255)) if case.mask else None
    # when the job is submitted and run
    job = client.submit(images if case.images > 1 else images[0], prompt=case.prompt,
                        operation=case.operation, model=case.model, options=case.options,
                        mask=mask, negative_prompt=case.negative_prompt)
    assert Decimal(job["cost"]["estimated"]) == case.price
    done = client.wait(job["id"], timeout=45)
    # then it succeeded with an image in S3 that Pillow opens
    assert done["status"] == "succeeded", (done["error"], live.worker.log_tail())
    [output] = done["outputs"]
    img = Image.open(io.BytesIO(httpx.get(output["url"], timeout=10).content))
    assert img.size == (output["width"], output["height"])
    assert Decimal(done["cost"]["actual"]) == case.price
    # and the simulator received the model's own fields, with our images as data URIs
    with session_scope(live.settings.database_url) as session:
        request_id = session.query(Job.provider_request_id).filter(Job.id == job["id"]).scalar()
    received = sim_request(live, request_id)
    assert received["model_path"] == live_model_path(case.model)
    body = received["body"]
    expected_keys = {"prompt"} if case.prompt else set()
    expected_keys |= {"images"} if case.images > 1 or case.model in MULTI else {"image"}
    expected_keys |= {"mask_image"} if case.mask else set()
    expected_keys |= set(case.sent)
    assert set(body) == expected_keys
    sent_images = body["images"] if "images" in body else [body["image"]]
    assert [decoded(uri) for uri in sent_images] == images
    if case.mask:
        assert decoded(body["mask_image"]) == mask
    for name, value in case.sent.items():
        assert body[name] == value, name
    if case.prompt:
        assert body["prompt"] == case.prompt


MULTI = {"qwen-edit-plus", "wan-2.5-edit", "flux-kontext-pro-multi",
         "nano-banana-pro-edit-ultra"}


def live_model_path(model: str) -> str:
    from shared.providers.catalog import load_catalog

    return load_catalog().get(model).model_path


def test_editq_charges_match_what_the_simulator_billed(live: Live) -> None:
    # given the jobs above (and any others) finished against this simulator, and charged
    # (a canceled job whose call completed anyway is billed and charged too)
    stats = httpx.get(f"{live.sim_url}/_sim/stats", timeout=10).json()
    billed = {path: Decimal(entry["usd"]) for path, entry in stats["billing"].items()}
    # (only this simulator's jobs, whichever module made them: other modules run their
    # own simulators on this database; this one knows its own tasks' ids)
    with session_scope(live.settings.database_url) as session:
        candidates = session.query(Job.model, Job.cost_actual, Job.provider_request_id).filter(
            Job.provider == "wavespeed", Job.cost_actual.is_not(None),
            Job.provider_request_id.is_not(None)).all()
    sim = httpx.Client(base_url=live.sim_url, timeout=10,
                       headers={"Authorization": f"Bearer {SIM_KEY}"})
    rows = [(model, cost) for model, cost, request_id in candidates
            if sim.get(f"/api/v3/predictions/{request_id}/result").status_code == 200]
    ours: dict[str, Decimal] = {}
    for model, cost in rows:
        path = live_model_path(model)
        ours[path] = ours.get(path, Decimal("0")) + cost
    # then, per model, editq recorded exactly what the provider billed
    assert ours, "no WaveSpeed job succeeded before this test"
    for path, amount in ours.items():
        assert billed.get(path) == amount, path
