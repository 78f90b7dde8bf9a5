"""Celery configuration and enqueueing by task name.

Both the API (which only sends) and the worker (which also runs tasks) build
their Celery app here, so the API never imports the worker package.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from shared.config import Settings

RUN_TASK = "editq.run_job"
# A job for a worker's engine to follow. (Before issue 28 the task had another name: a
# message of that name left in a queue by an older worker is refused, and the job's
# lease lapses and the reaper resumes it within a minute, as after any lost message.)
FOLLOW_TASK = "editq.follow_job"
REAP_TASK = "editq.reap"
DISPATCH_WEBHOOKS_TASK = "editq.dispatch_webhooks"
EXPAND_BATCH_TASK = "editq.expand_batch"
FEED_BULK_TASK = "editq.feed_bulk"
DELIVER_WEBHOOK_TASK = "editq.deliver_webhook"
SWEEP_RETENTION_TASK = "editq.sweep_retention"
INTERACTIVE = "interactive"
BULK = "bulk"
# A job's priority is the queue it runs on: "low" is bulk work (a batch's jobs unless the
# batch says otherwise), run on the bulk queue and held to bulk's share of each
# provider's limits (shared.guards.fairshare); "normal" is interactive.
NORMAL, LOW = "normal", "low"
PRIORITIES = (NORMAL, LOW)


def queue_for(priority: str) -> str:
    return BULK if priority == LOW else INTERACTIVE


def priority_of(queue: str) -> str:
    return LOW if queue == BULK else NORMAL


# Redis redelivers an unacknowledged message after this long. Every countdown
# editq schedules stays far below it, so a delayed task is never run twice.
VISIBILITY_TIMEOUT_SECONDS = 3600


def make_celery(settings: Settings, name: str = "editq") -> Celery:
    app = Celery(name, broker=settings.broker_url)
    exchange = Exchange("editq", type="direct")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        task_queues=(
            Queue(INTERACTIVE, exchange, routing_key=INTERACTIVE),
            Queue(BULK, exchange, routing_key=BULK),
        ),
        task_default_queue=INTERACTIVE,
        task_default_exchange="editq",
        task_default_routing_key=INTERACTIVE,
        task_create_missing_queues=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        broker_pool_limit=16,
        enable_utc=True,
    )
    return app


def _send(app: Celery, task: str, job_id: str, queue: str, countdown: float | None) -> None:
    if countdown is not None and countdown >= VISIBILITY_TIMEOUT_SECONDS / 2:
        raise ValueError("long delays belong in the database, not in a Celery countdown")
    kwargs: dict[str, Any] = {"queue": queue, "routing_key": queue}
    if countdown:
        kwargs["countdown"] = countdown
    app.send_task(task, args=[job_id], **kwargs)


def enqueue_run(app: Celery, job_id: str, *, queue: str = INTERACTIVE,
                countdown: float | None = None) -> None:
    """Start an attempt: claim the job and submit it."""
    _send(app, RUN_TASK, job_id, queue, countdown)


def enqueue_follow(app: Celery, job_id: str, *, queue: str = INTERACTIVE) -> None:
    """Have a worker's in-flight engine follow the job's provider request (a job handed
    back, or resumed from outside a worker). Never delayed: looks are the engine's.
    Not retried against a broker that is down: a stopping worker must not wait on it
    (the job's lease lapses and the reaper resumes it instead)."""
    app.send_task(FOLLOW_TASK, args=[job_id], queue=queue, routing_key=queue, retry=False)


def enqueue_delivery(app: Celery, delivery_id: str) -> None:
    """One attempt at one webhook delivery, now (its schedule lives in the database)."""
    app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=INTERACTIVE,
                  routing_key=INTERACTIVE)


def enqueue_expansion(app: Celery, batch_id: str) -> None:
    """Expand a batch into jobs, on the bulk queue, away from interactive work."""
    app.send_task(EXPAND_BATCH_TASK, args=[batch_id], queue=BULK, routing_key=BULK)
