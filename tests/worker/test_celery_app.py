"""The worker's Celery app is configured for at-least-once delivery made safe by the claim."""

from __future__ import annotations

import pytest

from shared.queue import BULK, INTERACTIVE, RUN_TASK, VISIBILITY_TIMEOUT_SECONDS, enqueue_run
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(30)


def test_worker_app_settings_and_task_registration() -> None:
    # given the worker's app as `celery -A worker.celery_app` loads it
    from worker.celery_app import app
    from worker.tasks import run_job

    conf = app.conf
    # then it speaks JSON only, acknowledges late, prefetches one, and uses threads
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_pool == "threads"
    # and its queues are declared, with interactive as the default
    assert {q.name for q in conf.task_queues} == {INTERACTIVE, BULK}
    assert conf.task_default_queue == INTERACTIVE and conf.task_create_missing_queues is False
    assert conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT_SECONDS
    # and the run task is registered under the name the API sends
    assert run_job.name == RUN_TASK and RUN_TASK in app.tasks
    # and beat's bulk work (feeding and pacing batches, the retention sweep) runs in bulk's
    # worker, its reaper and webhooks in the interactive one
    queues = {name: entry["options"]["queue"] for name, entry in conf.beat_schedule.items()}
    assert queues == {"bulk": BULK, "retention": BULK, "reap": INTERACTIVE,
                      "webhooks": INTERACTIVE}


def test_long_countdowns_are_refused() -> None:
    # a countdown near Redis' visibility timeout would be redelivered while still waiting
    from shared.queue import make_celery

    app = make_celery(make_settings(database_url="sqlite://"))
    with pytest.raises(ValueError, match="database"):
        enqueue_run(app, "job_x", countdown=VISIBILITY_TIMEOUT_SECONDS)
