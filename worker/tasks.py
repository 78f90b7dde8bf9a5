"""Tasks are one call each into `shared`; the worker holds no domain logic."""

from __future__ import annotations

import logging

from shared.config import get_settings
from shared.pipeline import poll_job as poll_step
from shared.pipeline import run_job as run_step
from shared.queue import INTERACTIVE, POLL_TASK, REAP_TASK, RUN_TASK, CeleryScheduler
from shared.recovery import recover_expired_leases
from shared.storage import get_storage
from worker.celery_app import app

log = logging.getLogger(__name__)


def _scheduler(task: object) -> CeleryScheduler:
    """Next steps go to the queue this message came from (interactive or bulk)."""
    info = getattr(getattr(task, "request", None), "delivery_info", None) or {}
    return CeleryScheduler(app, queue=info.get("routing_key") or INTERACTIVE)


@app.task(name=RUN_TASK, ignore_result=True)
def run_job(job_id: str) -> str:
    settings = get_settings()
    outcome = run_step(job_id, settings, get_storage(settings), _scheduler(run_job))
    log.info("job %s: %s %s", outcome.job_id, outcome.action, outcome.detail)
    return outcome.action


@app.task(name=POLL_TASK, ignore_result=True)
def poll_job(job_id: str) -> str:
    settings = get_settings()
    outcome = poll_step(job_id, settings, get_storage(settings), _scheduler(poll_job))
    log.debug("job %s: %s %s", outcome.job_id, outcome.action, outcome.detail)
    return outcome.action


@app.task(name=REAP_TASK, ignore_result=True)
def reap() -> dict[str, int]:
    found = recover_expired_leases(get_settings(), CeleryScheduler(app))
    counts = {"polling": len(found.polling), "requeued": len(found.requeued),
              "failed": len(found.failed)}
    if any(counts.values()):
        log.warning("reaper: %s", counts)
    return counts
