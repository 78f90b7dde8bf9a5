"""The worker's Celery app: `celery -A worker.celery_app worker` or `editq worker`."""

from __future__ import annotations

import logging

from celery import signals

from shared.config import get_settings
from shared.queue import INTERACTIVE, REAP_TASK, make_celery
from shared.storage import get_storage

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

app = make_celery(get_settings())
app.conf.imports = ("worker.tasks",)
# The reaper is cheap (one indexed query) and bounds how long a lost job waits.
app.conf.beat_schedule = {
    "reap-expired-leases": {"task": REAP_TASK, "schedule": 30.0,
                            "options": {"queue": INTERACTIVE, "expires": 25}},
}


@signals.worker_init.connect
def _ensure_bucket(**_: object) -> None:
    """Outputs go to this bucket; create it before the first job rather than fail on it."""
    get_storage(get_settings()).ensure_bucket()
