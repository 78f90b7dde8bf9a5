"""Tasks are one call each into `shared`; the worker holds no domain logic."""

from __future__ import annotations

import logging

from shared.batches.expansion import expand, feed, finish_batches, pace_of
from shared.inputs.uploads import delete_expired as delete_expired_uploads
from shared.jobs.attempt import run_job as run_attempt
from shared.jobs.finish import adopt
from shared.jobs.recovery import recover, send
from shared.queue import (
    DELIVER_WEBHOOK_TASK,
    DISPATCH_WEBHOOKS_TASK,
    EXPAND_BATCH_TASK,
    FEED_BULK_TASK,
    FOLLOW_TASK,
    INTERACTIVE,
    REAP_TASK,
    RUN_TASK,
    SWEEP_RETENTION_TASK,
    enqueue_delivery,
    enqueue_run,
)
from shared.retention.sweep import sweep
from shared.webhooks.delivery import deliver, take_due
from worker import runtime
from worker.celery_app import app

log = logging.getLogger(__name__)


def _queue(task: object) -> str:
    """The queue this message came from (interactive or bulk): next attempts go there."""
    info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return str(info.get("routing_key") or INTERACTIVE)


@app.task(name=RUN_TASK, ignore_result=True)
def run_job(job_id: str) -> str:
    ctx = runtime.current()
    outcome = run_attempt(job_id, ctx.services)
    runtime.next_step(ctx, app, outcome, _queue(run_job))
    log.info("job %s: %s %s", outcome.job_id, outcome.action, outcome.detail)
    return outcome.action


@app.task(name=FOLLOW_TASK, ignore_result=True)
def follow_job(job_id: str) -> str:
    """A job handed back by a stopping worker (or resumed from outside one): follow it."""
    ctx = runtime.current()
    job = adopt(job_id, ctx.settings)
    if job is None:
        return "skipped"
    ctx.engine.follow(job, 0.0)
    return "following"


@app.task(name=REAP_TASK, ignore_result=True)
def reap() -> dict[str, int]:
    ctx = runtime.current()
    found = recover(ctx.settings, ctx.storage)

    def follow_here(job_id: str) -> None:  # this worker's engine takes them
        if (job := adopt(job_id, ctx.settings)) is not None:
            ctx.engine.follow(job, 0.0)

    send(app, found, follow=follow_here)
    counts = found.counts()
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    return counts


@app.task(name=SWEEP_RETENTION_TASK, ignore_result=True)
def sweep_retention() -> dict[str, int]:
    ctx = runtime.current()
    done = {**sweep(ctx.settings, ctx.storage),
            "uploads_deleted": delete_expired_uploads(ctx.settings, ctx.storage)}
    if any(done.values()):
        log.info("retention: %s", done)
    return done


@app.task(name=DISPATCH_WEBHOOKS_TASK, ignore_result=True)
def dispatch_webhooks() -> int:
    due = take_due(runtime.current().settings)
    for delivery_id in due:
        enqueue_delivery(app, delivery_id)
    return len(due)


@app.task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(delivery_id: str) -> str:
    ctx = runtime.current()
    return deliver(delivery_id, ctx.settings, ctx.storage, ctx.webhook_http)


def _send_fed(job_id: str, queue: str) -> None:
    enqueue_run(app, job_id, queue=queue)


@app.task(name=EXPAND_BATCH_TASK, ignore_result=True)
def expand_batch(batch_id: str) -> int:
    ctx = runtime.current()
    made = expand(ctx.services, batch_id)
    # its jobs, now that it is expanded (else beat, within 1 s)
    feed(ctx.settings, _send_fed, pace_of(ctx.services))
    log.info("batch %s: %d job(s) created", batch_id, made)
    return made


@app.task(name=FEED_BULK_TASK, ignore_result=True)
def feed_bulk() -> int:
    ctx = runtime.current()
    sent = feed(ctx.settings, _send_fed, pace_of(ctx.services))
    finish_batches(ctx.settings, ctx.storage)
    return sent
