"""Counts of what one worker process asks of others, from inside it, without touching
worker/ or shared/: database transactions, Redis commands, broker messages.

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

import redis.client
from celery import signals
from sqlalchemy import event
from sqlalchemy.engine import Engine

_lock = threading.Lock()
_counts: collections.Counter[str] = collections.Counter()
_redis: collections.Counter[str] = collections.Counter()


def _count(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] += n


@event.listens_for(Engine, "commit")
def _commit(conn: Any) -> None:
    _count("db_commits")


@event.listens_for(Engine, "rollback")
def _rollback(conn: Any) -> None:
    _count("db_rollbacks")


_execute = redis.client.Redis.execute_command
_pipeline = redis.client.Pipeline.execute


def _execute_command(self: Any, *args: Any, **options: Any) -> Any:
    with _lock:
        _redis[str(args[0]).upper() if args else "?"] += 1
    return _execute(self, *args, **options)


def _pipeline_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
    with _lock:
        _redis["PIPELINE"] += 1
        for command in getattr(self, "command_stack", []):
            _redis[f"PIPELINE:{str(command.args[0]).upper()}"] += 1
    return _pipeline(self, *args, **kwargs)


redis.client.Redis.execute_command = _execute_command  # type: ignore[method-assign]
redis.client.Pipeline.execute = _pipeline_execute  # type: ignore[method-assign]


def _received(**_: Any) -> None:
    _count("broker_messages_received")


def _published(**_: Any) -> None:
    _count("broker_messages_published")


signals.task_received.connect(_received, weak=False)
signals.after_task_publish.connect(_published, weak=False)


def _write_forever(path: str) -> None:
    while True:
        with _lock:
            snapshot = {**_counts, "redis": dict(_redis),
                        "redis_round_trips": sum(v for k, v in _redis.items()
                                                 if not k.startswith("PIPELINE:"))}
        tmp = path + ".tmp"
        with open(tmp, "w") as out:
            json.dump(snapshot, out)
        os.replace(tmp, path)
        time.sleep(0.5)


threading.Thread(target=_write_forever, args=(os.environ["BENCH_COUNTS_FILE"],),
                 name="bench-counts", daemon=True).start()
