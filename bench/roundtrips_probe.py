"""Counts of what one worker process asks of others, from inside it, without touching
worker/ or shared/: database transactions and broker messages. (Redis commands are
counted by the benchmark from the server's INFO commandstats.)

`inflight_scale.py` starts the worker with `CELERY_WORKER_INCLUDE=roundtrips_probe`
(this folder on PYTHONPATH). The counts are written as JSON to $BENCH_COUNTS_FILE
every 0.5 s; the benchmark divides their growth by the jobs that ran meanwhile.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from typing import Any

from celery import signals
from sqlalchemy import event
from sqlalchemy.engine import Engine

_lock = threading.Lock()
_counts: collections.Counter[str] = collections.Counter()


def _count(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] += n


@event.listens_for(Engine, "commit")
def _commit(conn: Any) -> None:
    _count("db_commits")


@event.listens_for(Engine, "rollback")
def _rollback(conn: Any) -> None:
    _count("db_rollbacks")


def _received(**_: Any) -> None:
    _count("broker_messages_received")


def _published(**_: Any) -> None:
    _count("broker_messages_published")


signals.task_received.connect(_received, weak=False)
signals.after_task_publish.connect(_published, weak=False)


def _write_forever(path: str) -> None:
    while True:
        with _lock:
            snapshot = dict(_counts)
        tmp = path + ".tmp"
        with open(tmp, "w") as out:
            json.dump(snapshot, out)
        os.replace(tmp, path)
        time.sleep(0.5)


threading.Thread(target=_write_forever, args=(os.environ["BENCH_COUNTS_FILE"],),
                 name="bench-counts", daemon=True).start()
