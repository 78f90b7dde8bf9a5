"""How much load editq's provider simulators carry on this machine: figures, not verdicts.

The test suite checks that the simulators hold many requests at once and answer all of
them (tests/simulators/); how fast they do it depends on the machine and on
what else runs on it, so those figures are measured here and reported, never asserted.
These two scenarios were tests once (they moved here in issue 12, after one of them
failed on a busy machine):

- `wavespeed`: 1,000 tasks submitted at once (8 connections), latency 8 s: how long the
  submits took, when the last task completed, and the peak held in flight.
- `stability`: 400 concurrent sync requests (aiohttp, 400 connections), each held 1 s:
  the wall time and the peak in flight.

Each simulator runs in a thread of this process on 127.0.0.1, as in the tests.

    .venv/bin/python bench/simulator_load.py [--out bench/results/simulator_load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from PIL import Image
from wavespeed_inflight import machine

from simulators.common import serve_in_thread
from simulators.stability import StabilitySimConfig
from simulators.stability import create_app as stability_app
from simulators.stability_ops import OPERATIONS
from simulators.wavespeed import WaveSpeedSimConfig
from simulators.wavespeed import create_app as wavespeed_app

KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (250, 250, 250)).save(buf, "PNG")
    return buf.getvalue()


def wavespeed(tasks: int, latency: float) -> dict[str, Any]:
    small = "data:image/png;base64," + base64.b64encode(png((8, 8))).decode()
    config = WaveSpeedSimConfig(api_key=KEY, latency=str(latency))
    with serve_in_thread(wavespeed_app(config)) as server:
        async def scenario() -> dict[str, Any]:
            gate = asyncio.Semaphore(8)  # httpx's pool slows down with a long queue of waiters
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30,
                                         limits=httpx.Limits(max_connections=8)) as c:
                async def submit() -> httpx.Response:
                    async with gate:
                        return await c.post("/api/v3/wavespeed-ai/image-zoom-out",
                                            json={"image": small})
                started = time.monotonic()
                answers = await asyncio.gather(*[submit() for _ in range(tasks)])
                submitted = time.monotonic() - started
                while (await c.get("/_sim/stats")).json()["completed"] < tasks:
                    if time.monotonic() - started > latency + 120:
                        break
                    await asyncio.sleep(0.1)
                finished = time.monotonic() - started
                stats = (await c.get("/_sim/stats")).json()
            return {"tasks": tasks, "latency_s": latency,
                    "accepted": sum(a.status_code == 200 for a in answers),
                    "submit_s": round(submitted, 2), "last_completed_s": round(finished, 2),
                    "completed": stats["completed"], "peak_in_flight": stats["peak_in_flight"],
                    "late_s": round(finished - submitted - latency, 2)}
        return asyncio.run(scenario())


def stability(requests: int, latency: float) -> dict[str, Any]:
    image = png((64, 64))
    config = StabilitySimConfig(api_key=KEY, latency=str(latency), rate_limit=10_000)
    with serve_in_thread(stability_app(config)) as server:
        url = f"{server.url}/v2beta/stable-image/{OPERATIONS['remove_background'].path}"

        async def scenario() -> dict[str, Any]:
            connector = aiohttp.TCPConnector(limit=requests)
            async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
                async def one() -> int:
                    form = aiohttp.FormData()
                    form.add_field("image", image, filename="i.png", content_type="image/png")
                    async with session.post(url, data=form, headers={"accept": "image/*"}) as r:
                        await r.read()
                        return r.status
                started = time.monotonic()
                statuses = await asyncio.gather(*[one() for _ in range(requests)])
                elapsed = time.monotonic() - started
            stats = httpx.get(server.url + "/_sim/stats", timeout=10).json()
            return {"requests": requests, "latency_s": latency,
                    "answered_200": statuses.count(200), "wall_s": round(elapsed, 2),
                    "peak_in_flight": stats["peak_in_flight"]}
        return asyncio.run(scenario())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/simulator_load.json"))
    parser.add_argument("--wavespeed-tasks", type=int, default=1000)
    parser.add_argument("--stability-requests", type=int, default=400)
    args = parser.parse_args()
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "wavespeed": wavespeed(args.wavespeed_tasks, 8.0),
              "stability": stability(args.stability_requests, 1.0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
