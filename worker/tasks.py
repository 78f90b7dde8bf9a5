"""Tasks are one call each into `shared.pipeline`; the worker holds no domain logic."""

from __future__ import annotations

import logging

from shared.config import get_settings
from shared.pipeline import run_job as run_pipeline
from shared.queue import RUN_TASK, enqueue_run
from shared.storage import get_storage
from worker.celery_app import app

log = logging.getLogger(__name__)


@app.task(name=RUN_TASK, ignore_result=True)
def run_job(job_id: str) -> str:
    settings = get_settings()
    queue = run_job.request.delivery_info.get("routing_key") or "interactive"

    def schedule_retry(retry_job_id: str, delay: float) -> None:
        enqueue_run(app, retry_job_id, queue=queue, countdown=delay)

    outcome = run_pipeline(job_id, settings, get_storage(settings), schedule_retry)
    log.info("job %s: %s %s", outcome.job_id, outcome.action, outcome.detail)
    return outcome.action
