"""The chaos run itself: start the stack, submit while breaking, drain, settle, audit.

`run_chaos` is the one place where the phases and their order are written down; the
pieces it calls live in the modules next to this one.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from cli.chaos.audit import audit, sim_stats
from cli.chaos.config import (
    SIM_KEY,
    TERMINAL,
    ChaosConfig,
    child_env,
    console,
    fault_specs,
    set_faults,
)
from cli.chaos.progress import Clock, Progress
from cli.chaos.summary import print_summary
from cli.chaos.supervisor import Supervisor
from cli.chaos.workload import Submissions, plan_edits, request_body, submit_one
from cli.stack import embedded_stack, temporary_postgres_database


@contextlib.contextmanager
def _database(spec: str, workdir: Path) -> Iterator[str]:
    if spec == "sqlite":
        yield f"sqlite:///{workdir / 'editq.db'}"
        return
    with temporary_postgres_database(spec, prefix="editq_chaos") as url:
        yield url


def run_chaos(cfg: ChaosConfig) -> tuple[dict[str, Any], int]:
    """Run the whole scenario; answers (report, exit code). Everything started is stopped
    before this returns, whatever happens."""
    from cli.stack import require_simulators
    from shared.config import Settings
    from shared.db import session_scope
    from shared.migrate import upgrade
    from shared.storage import Storage
    from shared.tenants import create_api_key

    require_simulators()  # before anything starts

    # The run configures its own stack: nothing from the caller's EDITQ_* settings leaks in.
    for name in [k for k in os.environ if k.startswith("EDITQ_")]:
        del os.environ[name]
    clock = Clock()
    rng = random.Random(cfg.seed)
    run_id = uuid.uuid4().hex[:8]
    wavespeed_faults, stability_faults = fault_specs(cfg)

    def seed_args(offset: int) -> list[str]:
        return [] if cfg.seed is None else ["--seed", str(cfg.seed + offset)]

    stop = threading.Event()

    with contextlib.ExitStack() as exits:
        stack = exits.enter_context(embedded_stack(cfg.workdir))
        database_url = exits.enter_context(_database(cfg.database, stack.workdir))
        # (the database outlives the stack's children: they are stopped first)
        exits.callback(stack.stop)
        console.print(f"chaos run {run_id}: starting the stack in {stack.workdir}")
        redis_url = stack.start_redis()
        redis_child = stack.children[-1]
        s3_url = stack.start_s3()
        wavespeed_url = stack.start_wavespeed_sim(
            latency=cfg.latency, faults=wavespeed_faults,
            extra=["--api-key", SIM_KEY, *seed_args(0)])
        stability_url = stack.start_sim(
            "stability", latency=cfg.latency, faults=stability_faults,
            extra=["--api-key", SIM_KEY, *seed_args(1)])
        essential = stack.children[1:]  # S3 and the simulators
        # Set through the admin API as well: the WaveSpeed simulator drops its --faults
        # when it initialises (its reset() clears them), so without this it never faults.
        for url, spec in ((wavespeed_url, wavespeed_faults), (stability_url, stability_faults)):
            set_faults(url, spec)
        stack.env.update(child_env(cfg, database_url=database_url, redis_url=redis_url,
                                   s3_url=s3_url, wavespeed_url=wavespeed_url,
                                   stability_url=stability_url))
        settings = Settings.model_validate({k[6:].lower(): v for k, v in stack.env.items()})
        upgrade(database_url)
        Storage(settings).ensure_bucket()
        with session_scope(database_url) as session:
            key = create_api_key(session, f"chaos-{run_id}")
        supervisor = Supervisor(stack, cfg.workers, cfg.concurrency, redis_child, redis_url,
                                rng)
        exits.callback(supervisor.stop_all_workers)  # before anything they depend on
        essential.append(stack.spawn("beat", [sys.executable, "-m", "cli.main", "beat",
                                              "--loglevel", "INFO"]))
        api, api_url = stack.start_api()
        supervisor.essential = [*essential, api]
        console.print(f"up in {clock.since('start')} s: API {api_url}, redis {redis_url}, "
                      f"{cfg.workers} worker(s) x {cfg.concurrency} threads, beat\n"
                      f"  faults: WaveSpeed {wavespeed_faults or 'none'}; "
                      f"Stability {stability_faults or 'none'}")

        # ---- submit, while breaking things
        submissions = Submissions()
        edits = plan_edits(cfg.jobs, rng)
        http = exits.enter_context(httpx.Client(
            base_url=api_url, timeout=30,
            limits=httpx.Limits(max_connections=cfg.submit_threads),
            headers={"Authorization": f"Bearer {key}"}))
        pool = ThreadPoolExecutor(max_workers=cfg.submit_threads,
                                  thread_name_prefix="chaos-submit")
        exits.callback(pool.shutdown, wait=False, cancel_futures=True)
        exits.callback(stop.set)  # (runs first: submitters stop retrying)
        clock.mark("submit")
        futures: list[Future[None]] = [
            pool.submit(submit_one, http, request_body(edit, n, run_id),
                        f"chaos-{run_id}-{n}", n, submissions, stop)
            for n, edit in enumerate(edits)]
        breaker = _Chaos(cfg, supervisor, clock)
        redis_at = math.ceil(cfg.jobs / 3)

        def tick() -> None:
            supervisor.check()
            breaker.maybe_kill()
            if (cfg.redis_restart and supervisor.redis_restarts == 0
                    and submissions.finished >= redis_at):
                breaker.restart_redis(submissions.finished)

        progress = Progress(clock, database_url, submissions, supervisor, cfg.jobs)
        while not all(f.done() for f in futures):
            tick()
            progress.maybe_print()
            time.sleep(0.1)
        for future in futures:
            future.result()  # a bug in the submitter surfaces here
        clock.mark("submitted")
        console.print(f"submitted {len(submissions.job_ids)}/{cfg.jobs} in "
                      f"{clock.since('submit', 'submitted')} s ({submissions.retries} retries, "
                      f"{submissions.replayed} replayed by idempotency key)")

        # ---- drain: every job terminal, or the drain timeout
        deadline = time.monotonic() + cfg.drain_timeout
        while time.monotonic() < deadline:
            tick()
            counts = progress.maybe_print()
            if counts is not None and not any(counts[s] for s in counts if s not in TERMINAL):
                break
            time.sleep(0.2)
        clock.mark("drained")

        # ---- settle: the simulators finish what they started, so billing is final
        stats: dict[str, dict[str, Any]] = {}
        settle_deadline = time.monotonic() + cfg.settle_timeout
        while True:
            supervisor.check()
            stats = {"wavespeed": sim_stats(wavespeed_url),
                     "stability": sim_stats(stability_url)}
            if all(s["in_flight"] == 0 for s in stats.values()) or \
                    time.monotonic() > settle_deadline:
                break
            time.sleep(0.5)
        clock.mark("settled")
        in_flight_left = {name: s["in_flight"] for name, s in stats.items() if s["in_flight"]}

        counters = {
            "worker_kills": supervisor.kills, "worker_restarts": supervisor.restarts,
            "redis_restarts": supervisor.redis_restarts,
            "simulators_in_flight_at_end": in_flight_left,
            "durations": {"startup": clock.since("start", "submit"),
                          "submit": clock.since("submit", "submitted"),
                          "drain": clock.since("submitted", "drained"),
                          "settle": clock.since("drained", "settled"),
                          "total": clock.since("start")},
            "config": {"jobs": cfg.jobs, "workers": cfg.workers,
                       "kill_every": cfg.kill_every, "max_kills": cfg.max_kills,
                       "redis_restart": cfg.redis_restart, "seed": cfg.seed,
                       "database": "sqlite" if cfg.database == "sqlite" else "postgresql",
                       "faults": {"wavespeed": wavespeed_faults,
                                  "stability": stability_faults}},
        }
        result = audit(database_url, settings, stats, submissions, counters)
        stop.set()
    result.report["durations"]["total"] = clock.since("start")
    print_summary(result, breaker.events)
    return result.report, 0 if result.report["ok"] else 1


class _Chaos:
    """When to kill a worker, and the log of what was broken."""

    def __init__(self, cfg: ChaosConfig, supervisor: Supervisor, clock: Clock) -> None:
        self.cfg = cfg
        self.supervisor = supervisor
        self.clock = clock
        self.next_kill = time.monotonic() + cfg.kill_every
        self.events: list[str] = []

    def maybe_kill(self) -> None:
        cfg = self.cfg
        if cfg.kill_every <= 0 or time.monotonic() < self.next_kill:
            return
        if cfg.max_kills is not None and self.supervisor.kills >= cfg.max_kills:
            return
        self.next_kill += cfg.kill_every
        victim = self.supervisor.kill_one()
        if victim is not None:
            self._log(f"kill -9 {victim}")

    def restart_redis(self, submitted: int) -> None:
        self.supervisor.restart_redis(self.cfg.redis_downtime)
        self._log(f"redis restarted empty (after {submitted} submissions)")

    def _log(self, what: str) -> None:
        line = f"[{self.clock.since('submit'):6.1f}s] {what}"
        self.events.append(line)
        console.print(line)
