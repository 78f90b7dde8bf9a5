"""What a worker process builds once at start and its tasks share: its services
(shared.services), the in-flight engine, the wake-up listener and the webhook client.

Built in Celery's `worker_init`, stopped in `worker_shutdown` (after Celery has
stopped consuming and its running tasks have ended), where the engine hands back
every job it still follows so that another worker takes them at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from celery import Celery

from shared.config import Settings
from shared.inflight.engine import Engine
from shared.inflight.wakeups import WakeListener
from shared.jobs.outcomes import RunOutcome
from shared.models import Job
from shared.queue import INTERACTIVE, enqueue_follow, enqueue_run
from shared.services import Services
from shared.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    services: Services
    engine: Engine
    listener: WakeListener
    # Webhook POSTs, pooled, never following redirects (each hop would skip the guard).
    webhook_http: httpx.Client

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def storage(self) -> Storage:
        return self.services.storage


_current: Runtime | None = None


def start(app: Celery, services: Services) -> Runtime:
    global _current

    def run_later(job: Job, delay: float) -> None:
        enqueue_run(app, job.id, queue=job.queue or INTERACTIVE, countdown=delay)

    engine = Engine(services, run_later)
    listener = WakeListener(services.settings.redis_url, engine.wake)
    engine.start()
    listener.start()
    webhook_http = httpx.Client(follow_redirects=False,
                                headers={"user-agent": "editq-webhooks"})
    _current = Runtime(services, engine, listener, webhook_http)
    return _current


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("the worker runtime is built at worker start (worker_init)")
    return _current


def stop(app: Celery) -> None:
    global _current
    runtime, _current = _current, None
    if runtime is None:
        return
    runtime.listener.stop()

    def hand_back(jobs: list[Job]) -> None:
        for job in jobs:
            try:
                enqueue_follow(app, job.id, queue=job.queue or INTERACTIVE)
            except Exception as exc:  # the broker is down: the reaper takes it after 5 s
                log.warning("could not hand job %s back (%s)", job.id, type(exc).__name__)

    handed = runtime.engine.stop(hand_back)
    runtime.webhook_http.close()
    if handed:
        log.warning("worker stopping: %d followed job(s) handed back", len(handed))


def next_step(runtime: Runtime, app: Celery, outcome: RunOutcome, queue: str) -> None:
    """Do what a step's outcome asks for next: the worker's one scheduler. A request at
    the provider goes to this process's engine (no message); another attempt is a Celery
    task on the job's queue, after its delay. (The engine does the same with the
    outcomes of the finishes it runs.)"""
    if outcome.follow:
        assert outcome.job is not None
        runtime.engine.follow(outcome.job, outcome.delay)
    elif outcome.run_again:
        enqueue_run(app, outcome.job_id, queue=queue, countdown=outcome.delay)
