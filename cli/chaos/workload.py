"""The jobs a chaos run submits, and the threads that submit them.

A fixed mix of edits across both providers (each with inputs its model accepts),
pictures drawn on the fly so that no sample files are needed, and a submitter that
retries the way a careful client would: with the same Idempotency-Key every time.
"""

from __future__ import annotations

import base64
import contextlib
import io
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Edit:
    """One kind of job in the mix: a model, its operation and inputs valid for it."""

    model: str
    operation: str = "general_edit"
    prompt: str | None = "make the sky purple"
    options: dict[str, Any] = field(default_factory=dict)
    mask: bool = False
    size: tuple[int, int] = (96, 64)
    weight: int = 1


MIX = [
    Edit("qwen-edit", weight=4),
    Edit("flux-kontext-pro", "text_edit", "write CHAOS on the red box", weight=2),
    Edit("gpt-image-1-edit", options={"quality": "low"}, weight=2),
    Edit("gpt-image-1-edit", options={"quality": "medium", "size": "auto"}),
    Edit("ideogram-character", "character", "the same character, reading a book",
         options={"rendering_speed": "Turbo"}),
    Edit("stability-upscale-fast", "upscale_fast", prompt=None, size=(64, 48), weight=2),
    Edit("stability-erase", "erase", prompt=None, mask=True, size=(128, 96), weight=2),
    Edit("stability-search-replace", "search_replace", "a dog",
         options={"search_prompt": "the yellow circle"}, size=(128, 96), weight=2),
    Edit("stability-upscale-creative", "upscale_creative", "sharp and detailed",
         size=(128, 96)),
]


def plan_edits(count: int, rng: random.Random) -> list[Edit]:
    """`count` edits in the mix's proportions, shuffled."""
    cycle = [edit for edit in MIX for _ in range(edit.weight)]
    edits = [cycle[n % len(cycle)] for n in range(count)]
    rng.shuffle(edits)
    return edits


def picture(n: int, size: tuple[int, int]) -> bytes:
    img = Image.new("RGB", size, (40 + n * 37 % 180, 110, 200 - n * 13 % 150))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.ellipse([w // 5, h // 5, w // 2, h * 3 // 4], fill=(250, 200, 40))
    draw.rectangle([w * 3 // 5, h // 3, w * 9 // 10, h * 4 // 5], fill=(200, 40, 60))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def mask_for(size: tuple[int, int]) -> bytes:
    img = Image.new("RGB", size, (0, 0, 0))
    w, h = size
    ImageDraw.Draw(img).rectangle([w // 5, h // 5, w // 2, h * 3 // 4], fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def request_body(edit: Edit, n: int, run_id: str) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    body: dict[str, Any] = {"image": b64(picture(n, edit.size)), "operation": edit.operation,
                            "model": edit.model, "options": dict(edit.options),
                            "metadata": {"chaos": run_id, "n": n}}
    if edit.prompt is not None:
        body["prompt"] = edit.prompt
    if edit.mask:
        body["mask"] = b64(mask_for(edit.size))
    return body


# --------------------------------------------------------------------------- submitting


@dataclass
class Submissions:
    """What the submitting threads found out, shared with the main thread."""

    job_ids: dict[int, str] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    replayed: int = 0
    finished: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_one(http: httpx.Client, body: dict[str, Any], key: str, n: int,
               results: Submissions, stop: threading.Event,
               max_seconds: float = 120.0) -> None:
    """POST one job with its Idempotency-Key, again after a 5xx, a 429 or a connection
    error (the key makes a retried POST replay the first job, never create a second)."""
    deadline = time.monotonic() + max_seconds
    attempt, outcome = 0, "gave_up"
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            attempt += 1
            retry_after = 0.0
            try:
                response = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            else:
                if response.status_code == 202:
                    with results.lock:
                        results.job_ids[n] = response.json()["id"]
                        results.replayed += response.headers.get(
                            "Idempotent-Replayed", "").lower() == "true"
                    outcome = ""
                    return
                code = _problem_code(response)
                outcome = f"{response.status_code} {code}"
                if response.status_code < 500 and response.status_code != 429:
                    return  # refused for good: the request itself is wrong
                with contextlib.suppress(ValueError):
                    retry_after = float(response.headers.get("Retry-After", "0"))
            with results.lock:
                results.retries += 1
            pause = max(min(5.0, retry_after), random.uniform(0, min(3.0, 0.2 * 2 ** attempt)))
            stop.wait(pause)
    finally:
        with results.lock:
            results.finished += 1
            if outcome:
                results.errors[outcome] += 1


def _problem_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", ""))
    except ValueError:
        return ""
