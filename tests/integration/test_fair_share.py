"""Fair share through the real path: the API, a worker process, beat, Redis, S3 and the
WaveSpeed simulator over HTTP, on a stack of this module's own.

WaveSpeed is held to 4 requests in flight and bulk to half of them (EDITQ_BULK_SHARE
0.5): 2 slots bulk may take, 2 kept for interactive work. The simulator takes a second a
task, so a slot stays taken long enough to see who holds it.

- the reserve holds: while a batch keeps bulk at its cap, an interactive job is submitted
  to the provider at once, never throttled;
- low-priority jobs yield: single jobs sent with priority "low" keep to bulk's cap, and
  normal jobs sent after them pass them;
- a second tenant's batch progresses while a first tenant's larger batch runs: the two
  share bulk's slots, and GET /v1/usage shows each tenant its own part.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from cli.stack import Stack
from shared.db import session_scope
from shared.models import Tenant
from shared.tenants import create_api_key
from tests.api_client import TERMINAL, ApiClient
from tests.conftest import SIM_KEY, db_kind, live_env, own_database, redis_db, settings_of
from tests.helpers import b64, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MODEL = "qwen-edit"


@dataclass
class FairStack:
    api_url: str
    database_url: str
    stack: Stack

    def client(self, prefix: str) -> tuple[str, ApiClient]:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with session_scope(self.database_url) as session:
            key = create_api_key(session, name)
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
        assert tenant_id is not None
        return tenant_id, ApiClient(self.api_url, key, timeout=60)

    def admin(self) -> ApiClient:
        with session_scope(self.database_url) as session:
            key = create_api_key(session, f"ops-{uuid.uuid4().hex[:8]}", admin=True)
        return ApiClient(self.api_url, key, timeout=60)


@pytest.fixture(scope="module")
def fair(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[FairStack]:
    kind = db_kind(database_url)
    sub = Stack(workdir=stack.workdir)
    own = own_database(database_url, tmp_path_factory.mktemp("fair-db"))
    database_url = own.__enter__()
    try:
        sim_url = sub.start_wavespeed_sim(latency="1.0", extra=["--api-key", SIM_KEY])
        sub.env = {
            **live_env(database_url, redis_db(redis_base, "fair"), s3_url, bucket, sim_url),
            "EDITQ_WAVESPEED_RATE_PER_MINUTE": "0", "EDITQ_WAVESPEED_MAX_CONCURRENCY": "4",
            "EDITQ_BULK_SHARE": "0.5", "EDITQ_BULK_FEED_INTERVAL_SECONDS": "0.2",
            # A refused job comes back when the first slot's lease would end: short here.
            "EDITQ_FOLLOW_LEASE_MARGIN_SECONDS": "1",
        }
        settings_of(sub.env)  # (refused at once if unsafe)
        sub.start_worker(name=f"worker-fair-{kind}", concurrency=8)
        sub.spawn(f"beat-fair-{kind}", [sys.executable, "-m", "cli.main", "beat",
                                        "--loglevel", "WARNING"])
        _, api_url = sub.start_api()
        yield FairStack(api_url, database_url, sub)
    finally:
        sub.stop()
        own.__exit__(None, None, None)


def usage(client: ApiClient) -> dict[str, Any]:
    response = client.http.get("/v1/usage")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def in_flight(client: ApiClient) -> dict[str, Any]:
    part: dict[str, Any] = usage(client)["providers"]["wavespeed"]["in_flight"]
    return part


def events(client: ApiClient, job_id: str) -> list[dict[str, Any]]:
    response = client.http.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def batch_of(client: ApiClient, items: int, tag: str, **extra: Any) -> dict[str, Any]:
    return client.create_batch({
        "items": [{"prompt": f"{tag} {n}", "metadata": {"n": n}} for n in range(items)],
        "defaults": {"image": b64(image_bytes()), "model": MODEL,
                     "operation": "general_edit"}, **extra})


def gauge(metrics: str, name: str, **labels: str) -> float:
    """One in-flight gauge of WaveSpeed's in the Prometheus text."""
    wanted = {"limit": "in_flight", "provider": "wavespeed", **labels}
    for line in metrics.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and all(f'{k}="{v}"' in head
                                               for k, v in wanted.items()):
            return float(value)
    raise AssertionError(f"no {name} {wanted} in /metrics")


class Sampler:
    """GET /v1/usage every 50 ms: the most bulk and the most in all ever held."""

    def __init__(self, client: ApiClient) -> None:
        self.client, self.samples = client, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(in_flight(self.client))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_the_reserve_holds_while_bulk_is_at_its_cap(fair: FairStack) -> None:
    # given a batch of 12 jobs (low priority by default) keeping bulk at its cap of 2
    _, client = fair.client("reserve")
    admin = fair.admin()
    batch = batch_of(client, 12, "bulk")
    assert batch["priority"] == "low"
    with Sampler(admin) as sampled:
        wait_for(lambda: in_flight(admin)["bulk"] == 2, 30, "bulk to reach its cap")
        # when an interactive job is sent while bulk holds its cap
        sent = time.monotonic()
        job = client.submit(image_bytes(), model=MODEL, operation="general_edit",
                            prompt="now, please")
        assert job["priority"] == "normal"
        done = client.wait(job["id"], timeout=60)
        took = time.monotonic() - sent
        # then it is submitted at once, never throttled, and done in about the provider's
        # second, while the batch is still far from done
        kinds = [e["type"] for e in events(client, job["id"])]
        assert done["status"] == "succeeded", done
        assert "throttled" not in kinds and "submitted" in kinds, kinds
        assert took < 5, took
        left = client.get_batch(batch["id"])["counts"]
        assert left["queued"] + left["running"] >= 6, left
        # and the metrics say what bulk may hold and holds (between one bulk job's end and
        # the next one's start it holds less), naming no tenant
        metrics = admin.http.get("/metrics").text
        assert gauge(metrics, "editq_provider_limit", priority="low") == 2.0
        assert gauge(metrics, "editq_provider_limit", priority="all") == 4.0
        assert 0.0 <= gauge(metrics, "editq_provider_limit_used", priority="low") <= 2.0
        assert gauge(metrics, "editq_provider_bulk_tenants") <= 1.0
        assert "tenant=" not in metrics
    # and bulk never held more than its cap, while the whole limit was used
    assert max(s["bulk"] for s in sampled.samples) <= 2  # (wait_for saw it reach 2)
    assert max(s["used"] for s in sampled.samples) <= 4
    client.cancel_batch(batch["id"])


def test_low_priority_jobs_keep_to_bulks_cap_and_normal_ones_pass_them(
        fair: FairStack) -> None:
    # given six single jobs sent with priority "low"
    _, client = fair.client("low")
    admin = fair.admin()
    with Sampler(admin) as sampled:
        low = [client.submit(image_bytes(), model=MODEL, operation="general_edit",
                             prompt=f"low {n}", priority="low") for n in range(6)]
        assert {j["priority"] for j in low} == {"low"}
        wait_for(lambda: in_flight(admin)["bulk"] == 2, 30, "low jobs to reach bulk's cap")
        # when two normal jobs are sent after them
        normal = [client.submit(image_bytes(), model=MODEL, operation="general_edit",
                                prompt=f"normal {n}") for n in range(2)]
        normal_done = [client.wait(j["id"], timeout=60) for j in normal]
        # then both normal jobs are done before the last low ones have even started
        assert all(j["status"] == "succeeded" for j in normal_done)
        low_now = [client.get(j["id"]) for j in low]
        assert sum(j["status"] not in TERMINAL for j in low_now) >= 2, low_now
        finished = [client.wait(j["id"], timeout=90) for j in low]
    assert all(j["status"] == "succeeded" for j in finished)
    # and low-priority work never held more than bulk's cap
    assert max(s["bulk"] for s in sampled.samples) <= 2  # (wait_for saw it reach 2)
    # and the ones that waited said so (throttled, no attempt spent)
    throttled = [j for j in low if any(e["type"] == "throttled"
                                       for e in events(client, j["id"]))]
    assert throttled and all(j["attempts"] == 1 for j in finished)


def test_a_second_tenants_batch_progresses_beside_a_first_tenants_large_one(
        fair: FairStack) -> None:
    # given tenant A's batch of 40 jobs, running, with bulk at its cap of 2
    a_id, a = fair.client("big")
    b_id, b = fair.client("small")
    admin = fair.admin()
    big = batch_of(a, 40, "big")
    wait_for(lambda: in_flight(admin)["bulk_by_tenant"].get(a_id) == 2, 30,
             "A's batch to hold bulk's cap")
    # when tenant B sends a batch of 4 jobs
    began = time.monotonic()
    small = batch_of(b, 4, "small")
    # then B soon holds a slot of bulk's two (its fair part), and sees its own part only
    wait_for(lambda: in_flight(admin)["bulk_by_tenant"].get(b_id, 0) >= 1, 30,
             "B to get its part")
    mine = in_flight(b)
    assert mine["bulk_yours"] >= 1 and mine["bulk_tenants"] == 2
    assert "bulk_by_tenant" not in mine and a_id not in json.dumps(usage(b))
    # and B's batch completes while A's is far from done: B was not held behind A's 40
    wait_for(lambda: b.get_batch(small["id"])["status"] == "completed", 60,
             "B's batch to complete")
    took = time.monotonic() - began
    a_done = a.get_batch(big["id"])["progress"]["done"]
    assert a_done < 30, a_done
    # (alone at one slot of the two it would take 4 s of provider time at best; behind
    # A's 40 jobs at two slots, 20 s)
    assert took < 15, took
    a.cancel_batch(big["id"])
