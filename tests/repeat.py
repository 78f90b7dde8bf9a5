"""Run tests several times in a row and name every test that failed at least once.

A test that fails one run in ten blocks work from landing for reasons unrelated to
it, and a single green run does not show it. This runs pytest RUNS times on the
given paths (the integration tests by default), each run a fresh session with its
own stack, keeps each run's JUnit report, and prints, per test that failed or
errored in any run, how many runs it failed and the first line of its message.

    make test-repeat                      # 3 runs of tests/integration
    make test-repeat RUNS=5 TESTS=tests/integration/test_costs.py

Exit status: 0 when every run passed every test, 1 otherwise (2 for usage errors).
Written here because pytest-repeat and pytest-rerunfailures repeat a test inside one
session, which hides failures that come from what a session shares.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def failures(report: Path) -> dict[str, str]:
    """Test id -> first line of its failure, for each test that failed or errored."""
    found: dict[str, str] = {}
    if not report.exists():
        return {"<session>": "pytest wrote no report (it crashed or was killed)"}
    for case in ET.parse(report).getroot().iter("testcase"):
        for problem in (*case.findall("failure"), *case.findall("error")):
            message = (problem.get("message") or "").strip()
            found[f"{case.get('classname')}::{case.get('name')}"] = (
                message.splitlines()[0][:160] if message else problem.tag)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2,
                        help="pytest-xdist workers per run, as `make test` (0: none)")
    parser.add_argument("paths", nargs="*", default=["tests/integration"])
    args, pytest_args = parser.parse_known_args()
    if args.workers:
        pytest_args = ["-n", str(args.workers), "--dist", "loadfile", "--no-loadscope-reorder",
                       *pytest_args]
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    failed_runs: Counter[str] = Counter()
    messages: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="editq-repeat-") as folder:
        for run in range(1, args.runs + 1):
            report = Path(folder) / f"run-{run}.xml"
            began = time.monotonic()
            code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p",
                                    "no:cacheprovider", f"--junitxml={report}",
                                    *pytest_args, *args.paths])
            found = failures(report)
            if code not in (0, 1) and not found:
                found = {"<session>": f"pytest exited {code}"}
            for name, message in found.items():
                failed_runs[name] += 1
                messages.setdefault(name, message)
            print(f"run {run}/{args.runs}: exit {code}, {len(found)} failing, "
                  f"{time.monotonic() - began:.0f} s", flush=True)
    if not failed_runs:
        print(f"no test failed in {args.runs} runs")
        return 0
    print(f"{len(failed_runs)} test(s) failed at least once in {args.runs} runs:")
    for name, count in failed_runs.most_common():
        print(f"  {count}/{args.runs}  {name}: {messages[name]}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
