"""`editq chaos`, the short form: jobs through a private stack while it breaks.

The command starts everything it needs itself (its own redis-server, S3, SQLite,
both simulators faulting at random, the API, two supervised workers, beat), so
this test shares nothing with the session's stack. One worker is killed with
SIGKILL while jobs are in flight, and Redis is replaced by an empty one a third
of the way through the submissions: every message it held is gone, and only the
reaper (run by beat) can find those jobs again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# Enough for every kind of fault to strike; the thousand-job form is in bench/README.md.
JOBS = 60


def run_chaos(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str],
                                                         dict[str, Any] | None]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDITQ_")}
    result = subprocess.run([sys.executable, "-m", "cli.main", "chaos", *args], cwd=ROOT,
                            env=clean, capture_output=True, text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    return result, report


def test_short_chaos_run_loses_nothing_and_charges_nothing_twice(tmp_path: Path) -> None:
    # given 60 jobs across both providers, with faults at the default rates, one worker
    # killed 6 s in and Redis wiped a third of the way through the submissions
    out = tmp_path / "chaos.json"
    started = time.monotonic()
    result, report = run_chaos(["--jobs", str(JOBS), "--kill-every", "6", "--kills", "1",
                                "--redis-restart", "--drain-timeout", "120", "--seed", "7",
                                "--workdir", str(tmp_path / "run"), "--out", str(out)],
                               timeout=280)
    took = time.monotonic() - started
    context = (f"exit {result.returncode} after {took:.0f}s\n--- stdout\n{result.stdout[-6000:]}"
               f"\n--- stderr\n{result.stderr[-3000:]}")
    assert report is not None, context
    # (the report is also written where --out says)
    assert json.loads(out.read_text()) == report

    # then the breaking happened as asked
    assert report["submitted"] == JOBS, context
    assert report["worker_kills"] >= 1 and report["worker_restarts"] >= 1, context
    assert report["redis_restarts"] == 1, context
    # and every job reached a final state, none twice, none charged twice
    assert report["lost"] == 0, context
    assert report["duplicate_outputs"] == 0, context
    assert report["duplicate_charges"] == 0, context
    assert report["succeeded"] + sum(report["failed"].values()) + report["canceled"] == JOBS
    # and the money reconciles: the ledger is what the jobs say they cost, and the
    # providers billed that plus at most the estimates of the calls whose billing is unknown
    recorded = Decimal(report["recorded_spend"])
    assert recorded == Decimal(report["sum_of_actual"]), context
    gap = Decimal(report["provider_billed"]) - recorded
    assert Decimal(0) <= gap <= Decimal(report["ambiguous_estimate"]), context
    assert report["ok"] is True and result.returncode == 0, context
