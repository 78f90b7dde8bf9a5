"""The in-flight engine through the real path: worker processes, the API, Redis, the
WaveSpeed simulator over HTTP. A worker that dies or stops while it follows jobs loses
none of them, and none is submitted twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from cli.stack import Child, Stack
from shared.db import session_scope
from shared.jobs.recovery import recover, send
from shared.models import Job, JobEvent
from shared.queue import make_celery
from shared.tenants import create_api_key
from tests.api_client import ApiClient
from tests.conftest import SIM_KEY, live_env, make_settings, own_database, redis_db
from tests.helpers import image_bytes, sim_call, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150), pytest.mark.prefer_postgresql]

JOBS = 100


@dataclass
class InFlight:
    api_url: str
    sim_url: str
    database_url: str
    broker_url: str
    stack: Stack

    def client(self, tenant: str) -> ApiClient:
        with session_scope(self.database_url) as session:
            return ApiClient(self.api_url, create_api_key(session, tenant))

    def submit_many(self, tenant: str, count: int) -> list[str]:
        client = self.client(tenant)
        image = image_bytes()
        with ThreadPoolExecutor(8) as pool:
            jobs = list(pool.map(lambda n: client.submit(image, prompt=f"edit {n}",
                                                         model="qwen-edit"), range(count)))
        return [job["id"] for job in jobs]

    def count(self, job_ids: list[str], *where: Any) -> int:
        with session_scope(self.database_url) as session:
            return int(session.scalar(select(func.count()).select_from(Job).where(
                Job.id.in_(job_ids), *where)) or 0)

    def events(self, job_ids: list[str], kind: str) -> int:
        with session_scope(self.database_url) as session:
            return int(session.scalar(select(func.count()).select_from(JobEvent).where(
                JobEvent.job_id.in_(job_ids), JobEvent.type == kind)) or 0)

    def submits(self) -> int:
        return int(sim_call(self.sim_url, "GET", "/_sim/stats")["submits"])

    def worker(self, name: str) -> Child:
        return self.stack.start_worker(name=name, concurrency=8)


@pytest.fixture(scope="module")
def inflight(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[InFlight]:
    sub = Stack(workdir=stack.workdir)
    # A database of its own: the reaper run here acts on every job of its database.
    own = own_database(database_url, tmp_path_factory.mktemp("inflight-db"))
    database_url = own.__enter__()
    try:
        # Long enough that all the jobs are still at the provider when a worker goes.
        sim_url = sub.start_wavespeed_sim(latency="8", extra=["--api-key", SIM_KEY])
        broker = redis_db(redis_base, "inflight")
        sub.env = {**live_env(database_url, broker, s3_url, bucket, sim_url),
                   # A followed job's lease: 0.5 s (poll max) + 2 s, renewed every 0.67 s.
                   "EDITQ_FOLLOW_LEASE_MARGIN_SECONDS": "2"}
        _, api_url = sub.start_api()
        yield InFlight(api_url, sim_url, database_url, broker, sub)
    finally:
        sub.stop()
        own.__exit__(None, None, None)


def all_submitted(ctx: InFlight, job_ids: list[str]) -> bool:
    return ctx.count(job_ids, Job.provider_request_id.is_not(None)) == len(job_ids)


def test_a_worker_killed_while_following_100_jobs_loses_none_and_submits_none_twice(
        inflight: InFlight) -> None:
    # given 100 jobs that worker A submitted and now follows
    first = inflight.worker("inflight-a")
    submits_before = inflight.submits()
    job_ids = inflight.submit_many("killed", JOBS)
    wait_for(lambda: all_submitted(inflight, job_ids), 60, "all jobs at the provider",
             interval=0.2)
    assert inflight.count(job_ids, Job.status == "running") == JOBS
    # when A is killed -9 (no cleanup runs) and another worker is up
    first.kill()
    second = inflight.worker("inflight-b")
    # and the reaper resumes what A's leases no longer cover
    settings = make_settings(database_url=inflight.database_url,
                             broker_url=inflight.broker_url)
    app = make_celery(settings)
    resumed: list[str] = []

    def reap() -> bool:  # what `editq reaper --once` does
        found = recover(settings)
        send(app, found)
        resumed.extend(found.following)
        return len(resumed) >= JOBS

    wait_for(reap, 30, "the reaper to resume every job", interval=0.3)
    # then worker B finishes all 100, each from the request A had saved
    wait_for(lambda: inflight.count(job_ids, Job.status == "succeeded") == JOBS, 60,
             "every job to succeed", interval=0.3)
    assert inflight.submits() - submits_before == JOBS, second.log_tail()
    assert inflight.events(job_ids, "submitted") == JOBS
    assert inflight.count(job_ids, Job.attempts == 1) == JOBS
    assert sorted(resumed) == sorted(job_ids)
    second.stop()


def test_sigterm_hands_followed_jobs_back_to_another_worker_at_once(
        inflight: InFlight) -> None:
    # given worker A following 40 jobs, and worker B up beside it
    first = inflight.worker("inflight-c")
    job_ids = inflight.submit_many("stopped", 40)
    wait_for(lambda: all_submitted(inflight, job_ids), 60, "all jobs at the provider",
             interval=0.2)
    second = inflight.worker("inflight-d")
    submits_before = inflight.submits()
    # when A gets SIGTERM
    started = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(10)
    stopped_in = time.monotonic() - started
    # then A has exited within 10 s, having handed back every job it followed
    assert inflight.events(job_ids, "handed_back") == 40, first.log_tail()
    # and B finishes them with no reaper run and no lease expiry in between
    wait_for(lambda: inflight.count(job_ids, Job.status == "succeeded") == 40, 60,
             "every job to succeed", interval=0.3)
    assert inflight.events(job_ids, "follow_resumed") == 0
    assert inflight.submits() == submits_before
    assert inflight.count(job_ids, Job.attempts == 1) == 40
    assert stopped_in < 10
    second.stop()
