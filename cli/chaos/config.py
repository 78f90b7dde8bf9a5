"""What a chaos run is asked to do, and how its private stack is set up for it.

The settings (`ChaosConfig`), the random faults each simulator injects, and the
environment every child process runs with live together because they are the one
place to look when a run behaves differently from what its options say.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

TERMINAL = ("succeeded", "failed", "canceled")
SIM_KEY = "chaos-sim-key"
BUCKET = "editq-chaos"

console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True)
class ChaosConfig:
    jobs: int = 200
    kill_every: float = 0.0
    max_kills: int | None = None
    redis_restart: bool = False
    redis_downtime: float = 1.0
    workers: int = 2
    concurrency: int = 8
    http_5xx: float = 0.10
    rate_limited: float = 0.05
    hang: float = 0.02
    task_failures: float = 0.02
    drain_timeout: float = 300.0
    settle_timeout: float = 60.0
    database: str = "sqlite"
    seed: int | None = None
    submit_threads: int = 16
    latency: str = "0.3-1"
    workdir: Path | None = None


def _rate(value: float) -> str:
    return f"{value:.6g}"


def fault_specs(cfg: ChaosConfig) -> tuple[str, str]:
    """Both simulators' random faults, in their own vocabularies: (WaveSpeed, Stability).

    `--http-5xx` is split over 500 (half), 502 and 503 (a quarter each); 429s carry
    Retry-After; all of these and hangs strike any endpoint (submits, polls and output
    downloads at WaveSpeed; submits and result reads at Stability). A task failure is a
    WaveSpeed task that fails with 5000 or 5003 (refunded, retried) and, at Stability,
    which has no failed tasks, a generation refused by moderation (not billed, terminal).
    """
    http = []
    if cfg.http_5xx:
        http += [f"500={_rate(cfg.http_5xx / 2)}", f"502={_rate(cfg.http_5xx / 4)}",
                 f"503={_rate(cfg.http_5xx / 4)}"]
    if cfg.rate_limited:
        http.append(f"429={_rate(cfg.rate_limited)}")
    if cfg.hang:
        http.append(f"hang={_rate(cfg.hang)}")
    wavespeed, stability = list(http), list(http)
    if cfg.task_failures:
        wavespeed += [f"task-5000={_rate(cfg.task_failures / 2)}",
                      f"task-5003={_rate(cfg.task_failures / 2)}"]
        stability.append(f"moderation={_rate(cfg.task_failures)}")
    return ",".join(wavespeed), ",".join(stability)


def set_faults(url: str, spec: str) -> None:
    """Make a simulator fault at these random rates (and no scripted faults)."""
    response = httpx.post(url + "/_sim/faults", json={"script": [], "rates": spec}, timeout=10)
    response.raise_for_status()
    wanted = len([part for part in spec.split(",") if part.strip()])
    if len(response.json()["rates"]) != wanted:
        raise RuntimeError(f"the simulator at {url} did not take the faults {spec!r}")


def child_env(cfg: ChaosConfig, *, database_url: str, redis_url: str, s3_url: str,
              wavespeed_url: str, stability_url: str) -> dict[str, str]:
    """What every child (API, workers, beat) runs with: short timeouts, so that a hung
    response resolves in seconds, and a reaper that runs every 2 s."""
    env = {
        "EDITQ_ENVIRONMENT": "development",
        "EDITQ_DATABASE_URL": database_url,
        "EDITQ_BROKER_URL": redis_url, "EDITQ_REDIS_URL": redis_url,
        "EDITQ_S3_ENDPOINT_URL": s3_url, "EDITQ_S3_BUCKET": BUCKET,
        "EDITQ_S3_ACCESS_KEY_ID": "chaos", "EDITQ_S3_SECRET_ACCESS_KEY": "chaos-secret",
        "EDITQ_WAVESPEED_BASE_URL": wavespeed_url, "EDITQ_WAVESPEED_API_KEY": SIM_KEY,
        "EDITQ_STABILITY_BASE_URL": stability_url, "EDITQ_STABILITY_API_KEY": SIM_KEY,
        "EDITQ_WORKER_CONCURRENCY": str(cfg.concurrency),
        "EDITQ_FOLLOW_INITIAL_SECONDS": "0.3", "EDITQ_FOLLOW_MAX_SECONDS": "1",
        "EDITQ_FOLLOW_LEASE_MARGIN_SECONDS": "3",
        "EDITQ_PROVIDER_SUBMIT_TIMEOUT_SECONDS": "3",
        "EDITQ_PROVIDER_LOOK_TIMEOUT_SECONDS": "2",
        # Hangs strike output downloads too: at the 60 s default, two on one job outlast
        # the suite's 120 s drain (a chaos run lost a job that way, 2026-12-02).
        "EDITQ_PROVIDER_DOWNLOAD_TIMEOUT_SECONDS": "5",
        "EDITQ_STABILITY_TIMEOUT_SECONDS": "5",
        "EDITQ_STABILITY_LOOK_INTERVAL": "0.5",
        # Past the slowest submit (5 s): a killed worker's jobs are resumed within seconds.
        "EDITQ_JOB_LEASE_SECONDS": "8",
        "EDITQ_REAPER_INTERVAL_SECONDS": "2",
        "EDITQ_QUEUED_STALE_SECONDS": "10",
    }
    if not database_url.startswith("sqlite"):
        # API, workers, beat and the harness share one PostgreSQL: small pools.
        env |= {"EDITQ_DATABASE_POOL_SIZE": "4", "EDITQ_DATABASE_MAX_OVERFLOW": "8"}
    return env
