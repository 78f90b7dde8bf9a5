"""Task timings from inside the benchmark's worker, without touching worker/.

`wavespeed_inflight.py --probe` starts the worker with `--include celery_probe`
(this folder on PYTHONPATH); every task then appends one JSON line to
$BENCH_PROBE_FILE: its name, when it was due (its ETA, for countdown tasks),
when the worker received it, and when a thread started and ended it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from typing import Any

from celery import signals

_lock = threading.Lock()
_seen: dict[str, tuple[float, float | None]] = {}  # task id -> (received, due)
_started: dict[str, float] = {}
_out = open(os.environ["BENCH_PROBE_FILE"], "a", buffering=1)  # noqa: SIM115 (process-long)


def _received(request: Any, **_: Any) -> None:
    eta = request.eta
    due = eta.timestamp() if isinstance(eta, datetime) else None
    with _lock:
        _seen[request.id] = (time.time(), due)


def _prerun(task_id: str, **_: Any) -> None:
    with _lock:
        _started[task_id] = time.time()


def _postrun(task_id: str, task: Any, **_: Any) -> None:
    ended = time.time()
    with _lock:
        received, due = _seen.pop(task_id, (None, None))
        started = _started.pop(task_id, None)
        _out.write(json.dumps({"task": task.name, "due": due, "received": received,
                               "started": started, "ended": ended}) + "\n")


signals.task_received.connect(_received, weak=False)
signals.task_prerun.connect(_prerun, weak=False)
signals.task_postrun.connect(_postrun, weak=False)
