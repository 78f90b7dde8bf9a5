"""The worker's Celery app: `celery -A worker.celery_app worker` or `editq worker`."""

from __future__ import annotations

import logging

from celery import signals

from shared.config import Settings
from shared.queue import (
    BULK,
    DISPATCH_WEBHOOKS_TASK,
    FEED_BULK_TASK,
    INTERACTIVE,
    REAP_TASK,
    SWEEP_RETENTION_TASK,
    make_celery,
)
from shared.services import Services
from worker import runtime

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
# httpx logs every request at INFO: three lines per job that say nothing the job's own
# log line does not, for CPU the worker spends on nothing else.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Celery's app is made at import (`celery -A worker.celery_app`), and its beat schedule
# with it; the services are built at worker start, below.
settings = Settings()
app = make_celery(settings)
app.conf.imports = ("worker.tasks",)
# The reaper is cheap (two indexed queries) and bounds how long a lost job waits.
app.conf.beat_schedule = {
    "reap": {"task": REAP_TASK, "schedule": settings.reaper_interval_seconds,
             "options": {"queue": INTERACTIVE,
                         "expires": max(1.0, settings.reaper_interval_seconds * 0.9)}},
    # Due webhook deliveries (first attempts and retries) leave from the database.
    "webhooks": {"task": DISPATCH_WEBHOOKS_TASK,
                 "schedule": settings.webhook_dispatch_interval_seconds,
                 "options": {"queue": INTERACTIVE,
                             "expires": max(0.5, settings.webhook_dispatch_interval_seconds)}},
    # Batch jobs go to the bulk queue as room frees under the in-flight cap; finished
    # batches get their manifest and their batch.completed webhook. On the bulk queue:
    # feeding, pacing and finishing batches are bulk's work, in bulk's (niced) worker.
    "bulk": {"task": FEED_BULK_TASK, "schedule": settings.bulk_feed_interval_seconds,
             "options": {"queue": BULK,
                         "expires": max(0.5, settings.bulk_feed_interval_seconds)}},
    # Stored images whose time has come (and expired uploads), in bounded batches, on the
    # bulk queue: deleting never takes an interactive worker's time.
    "retention": {"task": SWEEP_RETENTION_TASK,
                  "schedule": settings.retention_sweep_interval_seconds,
                  "options": {"queue": BULK,
                              "expires": max(0.5, settings.retention_sweep_interval_seconds)}},
}


@signals.worker_init.connect
def _start(**_: object) -> None:
    """The process's services, once (worker.runtime). Outputs go to the bucket: create it
    before the first job rather than fail on it."""
    services = Services(settings)
    services.storage.ensure_bucket()
    runtime.start(app, services)


@signals.worker_shutdown.connect
def _stop(**_: object) -> None:
    """Celery has stopped consuming and its tasks have ended: hand followed jobs back."""
    runtime.stop(app)
