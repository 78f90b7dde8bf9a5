"""The worker's Celery app: `celery -A worker.celery_app worker` or `editq worker`."""

from __future__ import annotations

import logging

from celery import signals

from shared.config import get_settings
from shared.queue import make_celery
from shared.storage import get_storage

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

app = make_celery(get_settings())
app.conf.imports = ("worker.tasks",)


@signals.worker_init.connect
def _ensure_bucket(**_: object) -> None:
    """Outputs go to this bucket; create it before the first job rather than fail on it."""
    get_storage(get_settings()).ensure_bucket()
