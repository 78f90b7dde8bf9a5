"""Breaker, deadlines and the reaper through the real path: API, worker process, Redis,
the WaveSpeed simulator over HTTP. A stack of this module's own, with the breaker on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis

from cli.stack import Child, Stack
from shared.db import session_scope
from shared.tenants import create_api_key
from tests.api_client import ApiClient
from tests.conftest import SIM_KEY, live_env, own_database, redis_db
from tests.helpers import image_bytes, sim_call, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@dataclass
class Resilient:
    api_url: str
    sim_url: str
    broker_url: str
    database_url: str
    stack: Stack
    env: dict[str, str]
    worker: Child

    def client(self, tenant: str) -> ApiClient:
        with session_scope(self.database_url) as session:
            return ApiClient(self.api_url, create_api_key(session, tenant))

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        return sim_call(self.sim_url, method, path, **kwargs)

    def events(self, client: ApiClient, job_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = client.http.get(f"/v1/jobs/{job_id}/events").json()["data"]
        return data


@pytest.fixture(scope="module")
def res(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resilient]:
    sub = Stack(workdir=stack.workdir)
    # A database of its own: the reaper acts on every queued job of its database.
    own = own_database(database_url, tmp_path_factory.mktemp("resilience-db"))
    database_url = own.__enter__()
    try:
        sim_url = sub.start_wavespeed_sim(latency="0.2", extra=["--api-key", SIM_KEY])
        broker = redis_db(redis_base, "resilience")
        sub.env = {
            **live_env(database_url, broker, s3_url, bucket, sim_url),
            "EDITQ_BREAKER_FAILURES": "2", "EDITQ_BREAKER_COOLDOWN_SECONDS": "3",
            "EDITQ_QUEUED_STALE_SECONDS": "2",
        }
        worker = sub.start_worker(name="worker-resilience", concurrency=4)
        _, api_url = sub.start_api()
        yield Resilient(api_url, sim_url, broker, database_url, sub, sub.env, worker)
    finally:
        sub.stop()
        own.__exit__(None, None, None)


def test_an_open_breaker_holds_jobs_back_then_lets_them_through(res: Resilient) -> None:
    # given WaveSpeed answering the next two submits with 503
    res.sim("POST", "/_sim/faults", json={"script": [{"endpoint": "submit", "fault": "503"},
                                                     {"endpoint": "submit", "fault": "503"}]})
    client = res.client("breaker")
    # when a job meets both (two provider failures in a row open the breaker)
    job = client.submit(image_bytes(), prompt="breaker", model="qwen-edit")

    def breaker_state() -> str:
        return str(httpx.get(res.api_url + "/readyz", timeout=10).json()
                   ["breakers"]["wavespeed"]["state"])

    # then /readyz shows it open, and the job waits for it rather than calling
    wait_for(lambda: breaker_state() == "open", 30, "the breaker to open")
    done = client.wait(job["id"], timeout=60)
    # and once the cooldown is over a probe goes through and the job succeeds
    assert done["status"] == "succeeded", res.worker.log_tail()
    assert done["attempts"] == 3
    reasons = [e["detail"].get("reason", "") for e in res.events(client, job["id"])
               if e["type"] == "throttled"]
    assert any("wavespeed circuit open" in r for r in reasons), reasons
    assert breaker_state() == "closed"
    assert res.sim("GET", "/_sim/stats")["submits"] >= 3


def test_a_deadline_fails_the_job_on_time_and_its_call_still_settles(res: Resilient) -> None:
    # given a provider that takes 4 s, and a job that must finish within 1 s
    res.sim("PUT", "/_sim/latency", json={"latency": "4"})
    try:
        client = res.client("deadline")
        billed = Decimal(res.sim("GET", "/_sim/stats")["billed_usd"])
        job = client.submit(image_bytes(), prompt="in a hurry", model="qwen-edit",
                            deadline_seconds=1)
        # when the deadline passes, the job fails at once (well before the provider is done)
        done = client.wait(job["id"], timeout=15)
        assert (done["status"], done["error"]["code"]) == ("failed", "deadline_exceeded")
        assert done["cost"]["actual"] is None  # the call is still out
        # then, once the call completes, it is charged: the provider billed it
        settled = wait_for(lambda: (j := client.get(job["id"]))["cost"]["actual"] and j, 30,
                           "the call to settle")
    finally:
        res.sim("PUT", "/_sim/latency", json={"latency": "0.2"})
    assert settled["cost"]["actual"] == "0.02" and settled["outputs"] == []
    assert Decimal(res.sim("GET", "/_sim/stats")["billed_usd"]) - billed == Decimal("0.02")


def test_a_job_whose_message_the_broker_lost_is_sent_again_by_the_reaper(
        res: Resilient) -> None:
    # given no worker running, a job accepted, and then the broker losing its data
    res.worker.stop()
    client = res.client("lost-message")
    job = client.submit(image_bytes(), prompt="lost and found", model="qwen-edit")
    redis.Redis.from_url(res.broker_url).flushdb()
    res.worker = res.stack.start_worker(name="worker-resilience-2", concurrency=4)

    # when the reaper runs, once the message is overdue
    def reap() -> bool:
        out = subprocess.run([sys.executable, "-m", "cli.main", "reaper", "--once"],
                             env={**os.environ, **res.env},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return "messages resent: 1" in out.stdout

    wait_for(reap, 30, "the reaper to resend the message", interval=0.5)
    # then the job runs and succeeds, once
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded" and done["attempts"] == 1, res.worker.log_tail()
    types = [e["type"] for e in res.events(client, job["id"])]
    assert types.count("message_resent") == 1 and types.count("succeeded") == 1
