"""Every fault class of the WaveSpeed simulator leads to its documented outcome.

The policy under test (README, "When a provider fails"):
- a submit answered with 429 or 5xx created nothing: the job is tried again;
- a submit with no answer (timeout, dropped connection) may have created a
  paid task: the job fails with `provider_outcome_unknown` and is never
  submitted again;
- a failed look (poll or download) is only looked at again;
- a task that fails with a 5xxx code is submitted again (failed tasks are
  refunded), a 1xxx code fails the job at once.

The stack is this module's own (simulator, worker, API), with short provider
timeouts, so that its faults never touch the other integration tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from cli.stack import Child, Stack
from shared.db import session_scope
from shared.models import Job, JobEvent
from tests.api_client import ApiClient
from tests.conftest import SIM_KEY, live_env, own_database, redis_db
from tests.helpers import image_bytes, sim_call, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@dataclass
class FaultStack:
    api_url: str
    sim_url: str
    database_url: str
    stack: Stack
    env: dict[str, str]
    worker: Child

    def client(self, tenant: str) -> ApiClient:
        from shared.tenants import create_api_key

        with session_scope(self.database_url) as session:
            return ApiClient(self.api_url, create_api_key(session, tenant))

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        return sim_call(self.sim_url, method, path, **kwargs)


@pytest.fixture(scope="module")
def faults(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    sub = Stack(workdir=stack.workdir)
    # A database of its own: its reaper acts on every stale job of its database.
    own = own_database(database_url, tmp_path_factory.mktemp("faults-db"))
    database_url = own.__enter__()
    try:
        sim_url = sub.start_wavespeed_sim(latency="0.2", extra=["--api-key", SIM_KEY])
        sub.env = {
            **live_env(database_url, redis_db(redis_base, "faults"), s3_url, bucket, sim_url),
            "EDITQ_PROVIDER_SUBMIT_TIMEOUT_SECONDS": "1.5",
            "EDITQ_PROVIDER_LOOK_TIMEOUT_SECONDS": "1",
            "EDITQ_FOLLOW_LEASE_MARGIN_SECONDS": "1",
        }
        worker = sub.start_worker(name="worker-faults", concurrency=4)
        _, api_url = sub.start_api()
        yield FaultStack(api_url, sim_url, database_url, sub, sub.env, worker)
    finally:
        sub.stop()
        own.__exit__(None, None, None)


@dataclass(frozen=True)
class Case:
    name: str
    script: list[tuple[str, str]]  # (endpoint, fault) in the order they strike
    status: str
    code: str | None
    attempts: int
    submits: int  # submit requests that reached the simulator
    tasks: int | None  # tasks it created (None: not asserted)


CASES = [
    Case("submit-429", [("submit", "429")], "succeeded", None, 2, 2, 1),
    Case("submit-429-no-retry-after", [("submit", "429-bare")], "succeeded", None, 2, 2, 1),
    Case("submit-500", [("submit", "500")], "succeeded", None, 2, 2, 1),
    Case("submit-502", [("submit", "502")], "succeeded", None, 2, 2, 1),
    Case("submit-503", [("submit", "503")], "succeeded", None, 2, 2, 1),
    Case("submit-503-every-attempt", [("submit", "503")] * 3, "failed",
         "provider_unavailable", 3, 3, 0),
    Case("poll-429", [("poll", "429")], "succeeded", None, 1, 1, 1),
    Case("poll-500-502-503", [("poll", "500"), ("poll", "502"), ("poll", "503")],
         "succeeded", None, 1, 1, 1),
    Case("poll-dropped", [("poll", "drop")], "succeeded", None, 1, 1, 1),
    Case("poll-hangs", [("poll", "hang")], "succeeded", None, 1, 1, 1),
    Case("poll-slow", [("poll", "slow")], "succeeded", None, 1, 1, 1),
    Case("output-download-500", [("output", "500")], "succeeded", None, 1, 1, 1),
    Case("task-1403", [("submit", "task-1403")], "failed", "provider_task_failed", 1, 1, 1),
    Case("task-1200-moderation", [("submit", "task-1200")], "failed", "content_moderated",
         1, 1, 1),
    Case("task-5003", [("submit", "task-5003")], "succeeded", None, 2, 2, 2),
    Case("submit-dropped", [("submit", "drop")], "failed", "provider_outcome_unknown",
         1, 1, 0),
    Case("submit-dropped-after-create", [("submit", "drop-after")], "failed",
         "provider_outcome_unknown", 1, 1, 1),
    Case("submit-hangs", [("submit", "hang")], "failed", "provider_outcome_unknown", 1, 1, None),
    Case("submit-slower-than-timeout", [("submit", "slow")], "failed",
         "provider_outcome_unknown", 1, 1, None),
]


def counters(fs: FaultStack) -> dict[str, int]:
    stats = fs.sim("GET", "/_sim/stats")
    return {name: int(stats[name]) for name in ("submits", "tasks_created")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_leads_to_its_documented_outcome(faults: FaultStack, case: Case) -> None:
    # given the simulator scripted to strike with this fault
    fs = faults
    fs.sim("POST", "/_sim/faults", json={"script": [{"endpoint": e, "fault": f}
                                                    for e, f in case.script]})
    before = counters(fs)
    client = fs.client(f"fault-{case.name}")
    # when a job runs into it
    job = client.submit(image_bytes(), prompt=f"fault {case.name}", model="qwen-edit")
    done = client.wait(job["id"], timeout=60)
    # then it ends as documented, with the right number of provider calls
    assert (done["status"], (done["error"] or {}).get("code")) == (case.status, case.code), \
        fs.worker.log_tail()
    assert done["attempts"] == case.attempts
    after = counters(fs)
    assert after["submits"] - before["submits"] == case.submits
    if case.tasks is not None:
        assert after["tasks_created"] - before["tasks_created"] == case.tasks
    # and every attempt's reason is on the timeline
    events = client.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert sum(e["type"] == "retry_scheduled" for e in events) == case.attempts - 1
    assert fs.sim("GET", "/_sim/faults")["script"] == []  # every scripted fault struck


def test_worker_killed_after_submit_is_replaced_and_polling_resumes(
        faults: FaultStack) -> None:
    # given a job submitted to a provider that takes 3 s
    fs = faults
    fs.sim("PUT", "/_sim/latency", json={"latency": "3"})
    try:
        before = counters(fs)
        client = fs.client("fault-worker-killed")
        job = client.submit(image_bytes(), prompt="survive a dead worker", model="qwen-edit")

        def request_id() -> str | None:
            with session_scope(fs.database_url) as session:
                return session.scalar(select(Job.provider_request_id)
                                      .where(Job.id == job["id"]))

        saved = wait_for(request_id, 20, "the provider request id to be saved")
        # when its worker is killed (-9) and another one takes over
        fs.worker.kill()
        fs.worker = fs.stack.start_worker(name="worker-faults-2", concurrency=4)
        # (the reaper acts once the dead chain's lease, about 1.5 s here, has expired;
        # on the session's shared database it may resume other stale jobs in the same
        # pass, so what is waited for is this job's own `follow_resumed` event)
        def resumed() -> bool:
            subprocess.run([sys.executable, "-m", "cli.main", "reaper", "--once"],
                           env={**os.environ, **fs.env}, capture_output=True, timeout=30)
            with session_scope(fs.database_url) as session:
                return "follow_resumed" in session.scalars(
                    select(JobEvent.type).where(JobEvent.job_id == job["id"])).all()

        wait_for(resumed, 30, "the reaper to resume polling the job", interval=0.5)
        done = client.wait(job["id"], timeout=30)
    finally:
        fs.sim("PUT", "/_sim/latency", json={"latency": "0.2"})
    # then the job finished on the same provider request, submitted once
    assert done["status"] == "succeeded", fs.worker.log_tail()
    assert done["attempts"] == 1
    with session_scope(fs.database_url) as session:
        types = list(session.scalars(select(JobEvent.type).where(JobEvent.job_id == job["id"])
                                     .order_by(JobEvent.seq)))
        final_id = session.scalar(select(Job.provider_request_id).where(Job.id == job["id"]))
    assert final_id == saved
    assert "follow_resumed" in types and types.count("submitted") == 1
    after = counters(fs)
    assert after["submits"] - before["submits"] == 1
    assert after["tasks_created"] - before["tasks_created"] == 1
