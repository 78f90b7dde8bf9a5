"""Each Stability operation end to end: API, worker, Stability simulator over HTTP, S3.

Outputs are checked for size, mode and format; the form the simulator
received, and what it billed, against editq's records.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from shared.db import session_scope
from shared.models import Job, Tenant
from tests.conftest import Live
from tests.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass(frozen=True)
class Case:
    operation: str
    size: tuple[int, int] = (128, 96)
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    images: int = 1
    mask: bool = False
    alpha: bool = False
    # What must come back.
    out_size: tuple[int, int] | None = None
    out_mode: str | None = None
    out_format: str = "PNG"
    credits: int = 0


CASES = [
    Case("inpaint", prompt="a red balloon", mask=True, credits=5, out_size=(128, 96)),
    Case("inpaint", prompt="a red balloon", alpha=True, credits=5, out_size=(128, 96)),
    Case("outpaint", options={"left": 32, "down": 16, "output_format": "jpeg"}, credits=4,
         out_size=(160, 112), out_format="JPEG"),
    Case("erase", alpha=True, options={"output_format": "webp"}, credits=5,
         out_size=(128, 96), out_format="WEBP"),
    Case("search_replace", prompt="a dog", options={"search_prompt": "cat"}, credits=5,
         out_size=(128, 96)),
    Case("search_recolor", prompt="bright red", options={"select_prompt": "car"}, credits=5,
         out_size=(128, 96)),
    Case("remove_background", credits=5, out_size=(128, 96), out_mode="RGBA"),
    Case("relight", options={"background_prompt": "a beach at dusk",
                             "light_source_direction": "above"}, credits=8,
         out_size=(128, 96)),
    Case("relight", images=2, credits=8, out_size=(128, 96)),
    Case("upscale_fast", size=(64, 48), credits=2, out_size=(256, 192)),
    Case("upscale_conservative", prompt="sharp", credits=40),
    Case("upscale_creative", prompt="detailed", options={"creativity": 0.2}, credits=60),
]
IDS = [f"{c.operation}{'-alpha' if c.alpha else ''}{'-ref' if c.images > 1 else ''}"
       for c in CASES]


def sim_request(live: Live, files_sha: str) -> dict[str, Any]:
    log = httpx.get(f"{live.stability_url}/_sim/requests", params={"limit": 1000},
                    timeout=10).json()
    entries = log["requests"] if isinstance(log, dict) else log
    return next(e for e in reversed(entries)
                if any(f.get("sha256") == files_sha for f in e["files"].values()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_operation_runs_end_to_end(live: Live, case: Case) -> None:
    # given an input image unique to this case (so its request can be found again)
    tenant = f"st-{case.operation}-{IDS[CASES.index(case)]}"
    client = live.client(tenant)
    mode = "RGBA" if case.alpha else "RGB"
    color = (30, 140, 60 + CASES.index(case), 0) if case.alpha else (30, 140,
                                                                     60 + CASES.index(case))
    source = image_bytes(case.size, mode=mode, color=color)
    images = [source] + [image_bytes((120, 90), color=(9, 9, 9))] * (case.images - 1)
    # when the operation runs with its default (Stability) model
    job = client.submit(images if case.images > 1 else source, prompt=case.prompt,
                        operation=case.operation, options=case.options,
                        mask=image_bytes(case.size, color=(255, 255, 255)) if case.mask
                        else None)
    assert job["provider"] == "stability"
    done = client.wait(job["id"], timeout=45)
    # then it succeeded, with an output of the expected size, mode and format
    assert done["status"] == "succeeded", (done["error"], live.worker.log_tail())
    [output] = done["outputs"]
    img = Image.open(io.BytesIO(httpx.get(output["url"], timeout=10).content))
    assert img.format == case.out_format
    if case.out_size:
        assert img.size == case.out_size
    else:
        assert img.width > case.size[0] and img.height > case.size[1]  # upscaled
    if case.out_mode:
        assert img.mode == case.out_mode
        # the background (the commonest corner colour) is now transparent
        assert img.getpixel((img.width - 1, img.height - 1))[3] == 0
    price = Decimal(case.credits) / 100
    assert Decimal(done["cost"]["actual"]) == price == Decimal(done["cost"]["estimated"])
    # and the simulator received Stability's own form
    received = sim_request(live, hashlib.sha256(source).hexdigest())
    expected_files = {"subject_image" if case.operation == "relight" else "image"}
    if case.images > 1:
        expected_files.add("background_reference")
    if case.mask:
        expected_files.add("mask")
    assert set(received["files"]) == expected_files
    expected_fields = {k: ("true" if v is True else str(v)) for k, v in case.options.items()}
    if case.prompt:
        expected_fields["prompt"] = case.prompt
    assert received["fields"] == expected_fields


def scripted(live: Live, endpoint: str, fault: str) -> None:
    httpx.post(f"{live.stability_url}/_sim/faults", timeout=10,
               json={"script": [{"endpoint": endpoint, "fault": fault}]}).raise_for_status()


def test_moderation_fails_the_job_without_a_charge(live: Live) -> None:
    client = live.client("st-moderated")
    scripted(live, "submit", "moderation")
    job = client.submit(image_bytes((128, 96)), operation="remove_background")
    done = client.wait(job["id"], timeout=30)
    assert (done["status"], done["error"]["code"]) == ("failed", "content_moderated")
    # (its cost is known: nothing, as Stability does not bill moderated calls)
    assert done["attempts"] == 1 and done["cost"]["actual"] == "0"


def test_content_filtered_result_is_kept_and_flagged(live: Live) -> None:
    client = live.client("st-filtered")
    scripted(live, "submit", "filtered")
    job = client.submit(image_bytes((128, 96)), operation="remove_background")
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert done["outputs"][0]["content_filtered"] is True
    assert done["cost"]["actual"] == "0.05"  # Stability bills a filtered result
    events = client.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert "content_filtered" in [e["type"] for e in events]


def test_async_result_rate_limited_once_is_read_again(live: Live) -> None:
    client = live.client("st-async-429")
    scripted(live, "result", "429")
    job = client.submit(image_bytes((128, 96)), operation="upscale_creative", prompt="x")
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1


def test_editq_charges_match_what_stability_billed(live: Live) -> None:
    stats = httpx.get(f"{live.stability_url}/_sim/stats", timeout=10).json()
    billed = Decimal(stats["billed_usd"])
    with session_scope(live.settings.database_url) as session:
        ours = session.query(Job.cost_actual).join(Tenant, Tenant.id == Job.tenant_id).filter(
            Job.provider == "stability", Job.status == "succeeded",
            Tenant.name.like("st-%")).all()
    assert ours and sum((c for (c,) in ours), Decimal("0")) == billed
