"""Batches through the real path: API, a worker process, beat, Redis, S3 and the WaveSpeed
simulator over HTTP, on a stack of this module's own.

- a JSONL batch of four times the in-flight cap runs to completion: every job once in the
  manifest and in the results stream, and what the simulator billed is what the jobs cost;
- a reprocessing of stored jobs with another model: the dry run's estimate is the
  children's, each child reuses its parent's stored input;
- the worker killed (SIGKILL) in the middle of expanding a reprocessing: the reaper
  resumes it once its lease runs out, and exactly as many jobs as parents exist in the end;
- (in-process, on a database of its own) feeders running at once never send a batch job
  twice nor more than the in-flight cap.

The stack has no provider limits (rate and concurrency off), so the bulk feeder's
in-flight cap is the only limit; beat feeds every 0.2 s and reaps every second, and an
expansion's lease lasts 5 s (60 s by default).

The sizes are what proves each property in seconds; `EDITQ_TEST_SCALE=full` runs the
same tests at the sizes they once had in the suite (2,000 items, 500 and 5,000 parents,
the default cap of 200), as a soak run (bench/README.md, "Scale runs of the suite").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from cli.stack import Child, Stack, temporary_postgres_database
from shared.batches.expansion import feed
from shared.db import session_scope, utcnow
from shared.jobs.states import new_job_id
from shared.migrate import upgrade
from shared.models import Batch, Job, JobEvent, Tenant
from shared.storage import Storage, input_key
from shared.tenants import create_api_key
from tests.api_client import ApiClient
from tests.conftest import (
    SIM_KEY,
    db_kind,
    live_env,
    make_settings,
    own_database,
    redis_db,
    settings_of,
)
from tests.helpers import b64, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240), pytest.mark.every_database]

QWEN_PRICE = Decimal("0.02")
FULL = os.environ.get("EDITQ_TEST_SCALE") == "full"
BULK_MAX_IN_FLIGHT = 200 if FULL else 40
ITEMS = 2000 if FULL else 4 * BULK_MAX_IN_FLIGHT
REPROCESSED = 500 if FULL else 60
KILL_PARENTS = 5000 if FULL else 1200
CHUNK_SIZE = 100 if FULL else 30


@dataclass
class BulkStack:
    api_url: str
    sim_url: str
    database_url: str
    storage: Storage
    stack: Stack
    env: dict[str, str]
    worker: Child
    beat: Child

    def client(self, prefix: str) -> tuple[str, ApiClient]:
        """A fresh tenant (its id) and a client with its key."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with session_scope(self.database_url) as session:
            key = create_api_key(session, name)
            tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
        assert tenant_id is not None
        return tenant_id, ApiClient(self.api_url, key, timeout=120)

    def sim_stats(self) -> dict[str, Any]:
        response = httpx.get(self.sim_url + "/_sim/stats", timeout=10)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def logs(self) -> str:
        return f"worker:\n{self.worker.log_tail()}\nbeat:\n{self.beat.log_tail(10)}"


@pytest.fixture(scope="module")
def bulk(stack: Stack, database_url: str, redis_base: str, s3_url: str, bucket: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[BulkStack]:
    kind = db_kind(database_url)
    sub = Stack(workdir=stack.workdir)
    # A database of its own: its beat feeds every batch job of its database, and the
    # shared stack's beat would otherwise send this module's jobs to its own broker.
    own = own_database(database_url, tmp_path_factory.mktemp("batches-db"))
    database_url = own.__enter__()
    try:
        sim_url = sub.start_wavespeed_sim(latency="0.2", extra=["--api-key", SIM_KEY])
        sub.env = {
            **live_env(database_url, redis_db(redis_base, "batches"), s3_url, bucket, sim_url),
            # No provider limits: the bulk feeder's cap is the only one.
            "EDITQ_WAVESPEED_RATE_PER_MINUTE": "0", "EDITQ_WAVESPEED_MAX_CONCURRENCY": "0",
            "EDITQ_BULK_FEED_INTERVAL_SECONDS": "0.2", "EDITQ_REAPER_INTERVAL_SECONDS": "1",
            "EDITQ_BULK_MAX_IN_FLIGHT": str(BULK_MAX_IN_FLIGHT),
            # Small chunks: an expansion takes long enough to be interrupted.
            "EDITQ_BATCH_CHUNK_SIZE": str(CHUNK_SIZE),
            "EDITQ_BATCH_EXPANSION_LEASE_SECONDS": "5",
        }
        settings = settings_of(sub.env)
        storage = Storage(settings)
        storage.ensure_bucket()
        worker = sub.start_worker(name=f"worker-batches-{kind}", concurrency=8)
        beat = sub.spawn(f"beat-batches-{kind}", [sys.executable, "-m", "cli.main", "beat",
                                                  "--loglevel", "WARNING"])
        _, api_url = sub.start_api()
        yield BulkStack(api_url, sim_url, database_url, storage, sub, sub.env, worker, beat)
    finally:
        sub.stop()
        own.__exit__(None, None, None)


# --------------------------------------------------------------------------- helpers


def get_batch(client: ApiClient, batch_id: str) -> dict[str, Any]:
    response = client.http.get(f"/v1/batches/{batch_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_completed(bulk: BulkStack, client: ApiClient, batch_id: str,
                   timeout: float) -> dict[str, Any]:
    """The batch once it is completed (polled every second: a view counts its jobs)."""
    def completed() -> dict[str, Any] | None:
        batch = get_batch(client, batch_id)
        return batch if batch["status"] == "completed" else None

    try:
        return wait_for(completed, timeout, f"batch {batch_id} to complete", interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {get_batch(client, batch_id)}\n{bulk.logs()}") from None


def result_lines(client: ApiClient, batch_id: str) -> list[dict[str, Any]]:
    response = client.http.get(f"/v1/batches/{batch_id}/results")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def batch_jobs(database_url: str, batch_id: str) -> list[Job]:
    with session_scope(database_url) as session:
        jobs = list(session.scalars(select(Job).where(Job.batch_id == batch_id)
                                    .order_by(Job.batch_index)))
        session.expunge_all()
    return jobs


def batch_row(database_url: str, batch_id: str) -> Batch:
    with session_scope(database_url) as session:
        batch = session.scalars(select(Batch).where(Batch.id == batch_id)).one()
        session.expunge(batch)
    return batch


class InFlightSampler:
    """The bulk jobs in flight (sent and not finished), sampled every 100 ms, as the feeder
    counts them: its cap must hold at every sample."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with session_scope(self.database_url) as session:
                self.samples.append(session.scalar(select(func.count()).select_from(Job).where(
                    Job.queue == "bulk", (Job.status == "running") | (
                        (Job.status == "queued") & Job.lease_expires_at.is_not(None)))) or 0)

    def __enter__(self) -> InFlightSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def post_batch(client: ApiClient, body: dict[str, Any]) -> httpx.Response:
    return client.http.post("/v1/batches", json=body)


def insert_parents(bulk: BulkStack, tenant_id: str, count: int, image: bytes) -> list[str]:
    """`count` succeeded local-pillow jobs of the tenant, inserted directly, whose input is
    `image` stored once in S3 (what a tenant's history of edits looks like)."""
    key = input_key(tenant_id, hashlib.sha256(image).hexdigest())
    bulk.storage.put_if_absent(key, image, "image/png")
    created = utcnow() - timedelta(minutes=5)
    rows: list[dict[str, Any]] = [{
        "id": new_job_id(), "tenant_id": tenant_id, "status": "succeeded",
        "operation": "grayscale", "model": "local-pillow", "provider": "local",
        "prompt": None, "options": {}, "metadata_": {"n": n}, "input_keys": [key],
        "outputs": [], "attempts": 1, "cost_estimated": Decimal(0), "cost_actual": Decimal(0),
        "currency": "USD", "queue": "interactive", "created_at": created,
        "updated_at": created, "started_at": created, "finished_at": created,
    } for n in range(count)]
    with session_scope(bulk.database_url) as session:
        for start in range(0, count, 1000):
            session.execute(insert(Job), rows[start:start + 1000])
        session.commit()
    return [r["id"] for r in rows]


# --------------------------------------------------------------------------- 1. items


@pytest.mark.timeout(300)
def test_a_jsonl_batch_runs_every_job_once_and_bills_what_it_cost(
        bulk: BulkStack) -> None:
    # given four times the in-flight cap of qwen-edit items as a JSONL file, each with its
    # own prompt, over defaults that carry the image
    tenant_id, client = bulk.client("batch-items")
    items = ITEMS
    jsonl = "\n".join(json.dumps({"model": "qwen-edit", "prompt": f"item {n}",
                                  "metadata": {"n": n}}) for n in range(items))
    defaults = {"image": b64(image_bytes()), "operation": "general_edit"}
    billed_before = Decimal(bulk.sim_stats()["billed_usd"])
    began = time.monotonic()

    # when it is uploaded
    response = client.http.post(
        "/v1/batches", files={"file": ("items.jsonl", jsonl.encode(), "application/x-ndjson")},
        data={"defaults": json.dumps(defaults)})

    # then it is accepted at once, with the whole estimate, before any job exists
    assert response.status_code == 202, response.text
    accepted = response.json()
    batch_id = accepted["id"]
    assert response.headers["location"] == f"/v1/batches/{batch_id}"
    assert (accepted["kind"], accepted["total"], accepted["invalid"]) == ("items", items, [])
    assert Decimal(accepted["cost"]["estimated_total"]) == QWEN_PRICE * items

    # and it completes, every job succeeded, the counts adding up to the items
    with InFlightSampler(bulk.database_url) as in_flight:
        done = wait_completed(bulk, client, batch_id, timeout=240)
    took = time.monotonic() - began
    counts = done["counts"]
    assert sum(counts.values()) == items, counts
    assert counts["succeeded"] == items, (counts, bulk.logs())
    assert (done["total"], done["expanded"]) == (items, items)
    assert done["progress"] == {"done": items, "total": items, "fraction": 1.0}
    assert done["finished_at"] is not None and done["expanded_at"] is not None

    # and the manifest in S3 lists every job exactly once, in batch order
    assert done["manifest_url"], done
    manifest_response = httpx.get(done["manifest_url"], timeout=30)
    assert manifest_response.status_code == 200
    manifest = [json.loads(line) for line in manifest_response.text.splitlines()
                if line.strip()]
    assert len(manifest) == items
    assert len({m["id"] for m in manifest}) == items
    assert [m["index"] for m in manifest] == list(range(items))
    assert Counter(m["status"] for m in manifest) == {"succeeded": items}
    assert all(len(m["outputs"]) == 1 and m["error"] is None for m in manifest)

    # and the results stream says the same (output links are presigned afresh on each read)
    def essentials(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(x["id"], x["index"], x["status"], x["model"], x["cost"]["estimated"],
                 x["cost"]["actual"]) for x in lines]

    results = result_lines(client, batch_id)
    assert essentials(results) == essentials(manifest)

    # and each job is its item: in the item's place, with its prompt, on the bulk queue
    jobs = batch_jobs(bulk.database_url, batch_id)
    assert [(j.batch_index, j.prompt, j.metadata_) for j in jobs] == [
        (n, f"item {n}", {"n": n}) for n in range(items)]
    assert {(j.queue, j.tenant_id, j.attempts) for j in jobs} == {("bulk", tenant_id, 1)}

    # and what the simulator billed is what the jobs cost, and what the batch reports
    actual = sum((Decimal(x["cost"]["actual"]) for x in results), Decimal(0))
    assert actual == QWEN_PRICE * items
    assert Decimal(done["cost"]["so_far"]) == actual
    billed = Decimal(bulk.sim_stats()["billed_usd"]) - billed_before
    assert billed == actual, (billed, actual)
    # and the feeder kept the bulk jobs in flight under its cap all along
    assert max(in_flight.samples) <= BULK_MAX_IN_FLIGHT, Counter(in_flight.samples)
    print(f"\n{items}-item batch: accepted to completed in {took:.1f} s; bulk jobs in flight "
          f"max {max(in_flight.samples)} over {len(in_flight.samples)} samples; simulator "
          f"peak in flight {bulk.sim_stats()['peak_in_flight']}")


# --------------------------------------------------------------------------- 2. reprocess


@pytest.mark.timeout(240)
def test_reprocessing_stored_jobs_with_another_model_reuses_their_inputs(
        bulk: BulkStack) -> None:
    # given stored local-pillow grayscale jobs, each on an image of its own
    _, client = bulk.client("batch-reprocess")
    parents_count = REPROCESSED
    parent_items = [{"image": b64(image_bytes(color=(n % 256, n // 256, 90))),
                     "metadata": {"n": n}} for n in range(parents_count)]
    response = post_batch(client, {"items": parent_items,
                                   "defaults": {"operation": "grayscale"}})
    assert response.status_code == 202, response.text
    parent_batch = response.json()["id"]
    wait_completed(bulk, client, parent_batch, timeout=120)
    parents = {j.id: j for j in batch_jobs(bulk.database_url, parent_batch)}
    assert len(parents) == parents_count
    assert {(j.status, j.model) for j in parents.values()} == {("succeeded", "local-pillow")}
    assert len({tuple(j.input_keys) for j in parents.values()}) == parents_count

    override = {"model": "qwen-edit", "operation": "general_edit",
                "prompt": "the same photo, as a watercolour"}
    spec = {"reprocess": {"filter": {"model": "local-pillow", "batch_id": parent_batch},
                          "override": override}}

    # when a dry run asks what reprocessing them with qwen-edit would take
    dry = post_batch(client, {**spec, "dry_run": True})

    # then it answers the count and the estimate, and creates nothing
    assert dry.status_code == 200, dry.text
    estimate = dry.json()
    assert (estimate["count"], estimate["invalid"], estimate["budget_ok"]) == (
        parents_count, [], True)
    assert Decimal(estimate["estimated_cost"]) == QWEN_PRICE * parents_count
    assert client.http.get("/v1/batches").json()["data"][0]["id"] == parent_batch

    # when the reprocessing is sent for real
    billed_before = Decimal(bulk.sim_stats()["billed_usd"])
    response = post_batch(client, spec)
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    assert response.json()["kind"] == "reprocess"
    done = wait_completed(bulk, client, batch_id, timeout=150)

    # then exactly one child per parent exists, the dry run's estimate theirs
    children = batch_jobs(bulk.database_url, batch_id)
    assert len(children) == parents_count
    assert [c.batch_index for c in children] == list(range(parents_count))
    assert sorted(c.parent_job_id or "" for c in children) == sorted(parents)
    assert sum((c.cost_estimated for c in children), Decimal(0)) == Decimal(
        estimate["estimated_cost"])
    assert Decimal(done["cost"]["estimated_total"]) == Decimal(estimate["estimated_cost"])
    # and each child has its parent's stored input, under the new model and prompt
    for child in children:
        parent = parents[child.parent_job_id or ""]
        assert child.input_keys == parent.input_keys
        assert child.metadata_ == parent.metadata_
        assert (child.model, child.provider, child.operation, child.prompt) == (
            "qwen-edit", "wavespeed", "general_edit", override["prompt"])
    # and every child ran on WaveSpeed from that input, and was billed once
    assert done["counts"]["succeeded"] == parents_count, (done["counts"], bulk.logs())
    results = result_lines(client, batch_id)
    assert {r["parent_job_id"] for r in results} == set(parents)
    billed = Decimal(bulk.sim_stats()["billed_usd"]) - billed_before
    assert billed == sum((Decimal(r["cost"]["actual"]) for r in results), Decimal(0))
    # and the parents are untouched
    assert {(j.status, j.model, j.batch_id) for j in
            batch_jobs(bulk.database_url, parent_batch)} == {
        ("succeeded", "local-pillow", parent_batch)}


# --------------------------------------------------------------------------- 3. kill


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_expansion_is_resumed_by_the_reaper_without_duplicates(
        bulk: BulkStack) -> None:
    # given stored jobs, reprocessed with qwen-edit (expanded CHUNK_SIZE jobs per chunk)
    tenant_id, client = bulk.client("batch-kill")
    total = KILL_PARENTS
    parents = insert_parents(bulk, tenant_id, total, image_bytes(color=(10, 160, 60)))
    response = post_batch(client, {"reprocess": {
        "filter": {"model": "local-pillow"},
        "override": {"model": "qwen-edit", "operation": "general_edit",
                     "prompt": "after the crash"}}})
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    assert response.json()["total"] == total

    # when the worker is killed (SIGKILL) while the batch is part expanded
    def part_expanded() -> bool:
        return 0 < batch_row(bulk.database_url, batch_id).expanded < total

    wait_for(part_expanded, 60, "the expansion to be under way", interval=0.02)
    bulk.worker.kill()
    killed = batch_row(bulk.database_url, batch_id)
    assert killed.status == "expanding" and 0 < killed.expanded < total, (
        killed.status, killed.expanded)
    assert killed.lease_expires_at is not None and killed.lease_expires_at > utcnow()
    # (what the dead worker committed is whole chunks: no chunk half-written)
    assert len(batch_jobs(bulk.database_url, batch_id)) == killed.expanded
    assert killed.expanded % CHUNK_SIZE == 0

    # and a new worker is started (beat runs the reaper every second)
    bulk.worker = bulk.stack.start_worker(name=f"worker-batches-{uuid.uuid4().hex[:6]}",
                                          concurrency=8)

    # then nobody expands the batch while the dead worker's lease holds
    def expanded_past_the_kill() -> bool:
        return batch_row(bulk.database_url, batch_id).expanded > killed.expanded

    wait_for(expanded_past_the_kill, 120, "the expansion to resume", interval=0.2)
    resumed_at = utcnow()
    assert resumed_at >= killed.lease_expires_at, (resumed_at, killed.lease_expires_at)

    # and it resumes where it stopped, and ends with exactly one job per parent
    def expanded() -> Batch | None:
        batch = batch_row(bulk.database_url, batch_id)
        return batch if batch.status != "expanding" else None

    batch = wait_for(expanded, 90, "the expansion to finish", interval=0.2)
    assert (batch.status, batch.total, batch.expanded) == ("running", total, total)
    assert batch.estimate_pending == Decimal(0)
    assert batch.estimated_total == QWEN_PRICE * total
    children = batch_jobs(bulk.database_url, batch_id)
    assert len(children) == total
    assert [c.batch_index for c in children] == list(range(total))
    assert sorted(c.parent_job_id or "" for c in children) == sorted(parents)
    with session_scope(bulk.database_url) as session:
        created = session.scalar(select(func.count()).select_from(JobEvent).join(
            Job, Job.id == JobEvent.job_id).where(Job.batch_id == batch_id,
                                                  JobEvent.type == "created"))
        seen = session.scalar(select(func.count()).select_from(Job).where(
            Job.tenant_id == tenant_id, Job.batch_id == batch_id))
    assert (created, seen) == (total, total)
    print(f"\nkilled at {killed.expanded}/{total} expanded; resumed "
          f"{(resumed_at - killed.lease_expires_at).total_seconds():.1f} s after the lease "
          "expired")

    # and once canceled (its queued jobs never run) the batch still counts all its jobs
    canceled = client.http.post(f"/v1/batches/{batch_id}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    assert sum(canceled.json()["counts"].values()) == total


# --------------------------------------------------------------------------- 4. feeders


def fresh_database(database_url: str, tmp_path: Any) -> contextlib.AbstractContextManager[str]:
    """A database of one test alone (no beat feeds it), of the session's kind."""
    if db_kind(database_url) == "sqlite":
        return contextlib.nullcontext(f"sqlite:///{tmp_path / 'feed.db'}")
    return temporary_postgres_database(os.environ["EDITQ_TEST_DATABASE_URL"],
                                       prefix="editq_test_feed")


def waiting_batch_jobs(url: str, batch_status: str, count: int,
                       tenant: str = "feeders") -> list[str]:
    """A batch of `tenant` in `batch_status` whose `count` jobs are created and not sent
    yet (its id: bat_<tenant>)."""
    upgrade(url)
    ids = [new_job_id() for _ in range(count)]
    batch_id = f"bat_{tenant}"
    with session_scope(url) as session:
        create_api_key(session, tenant)
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        now = utcnow()
        session.add(Batch(id=batch_id, tenant_id=tenant_id, kind="items",
                          status=batch_status, spec={}, total=count, created_at=now,
                          updated_at=now))
        session.flush()
        session.execute(insert(Job), [{
            "id": job_id, "tenant_id": tenant_id, "status": "queued",
            "operation": "general_edit", "model": "qwen-edit", "provider": "wavespeed",
            "options": {}, "metadata_": {}, "input_keys": [], "outputs": [],
            "attempts": 0, "cost_estimated": QWEN_PRICE, "currency": "USD",
            "queue": "bulk", "batch_id": batch_id, "batch_index": n,
            "created_at": now, "updated_at": now} for n, job_id in enumerate(ids)])
    return ids


def test_tenants_take_turns_for_the_room_under_the_cap(
        database_url: str, tmp_path: Any) -> None:
    # given one tenant's batch of 300 jobs, then two other tenants' batches of 10 and 30,
    # and room for 50 in flight
    with fresh_database(database_url, tmp_path) as url:
        big = waiting_batch_jobs(url, "running", 300, tenant="big")
        small = waiting_batch_jobs(url, "running", 10, tenant="small")
        medium = waiting_batch_jobs(url, "running", 30, tenant="medium")
        settings = make_settings(database_url=url, bulk_max_in_flight=50)
        sent: list[str] = []
        # when the feeder fills the room
        assert feed(settings, lambda job_id, queue: sent.append(job_id)) == 50
        # then the later tenants are not left behind the first one's 300 jobs: all 10 of
        # the small one's, and the other two share the rest equally, oldest first each
        assert set(small) <= set(sent)
        assert [j for j in sent if j in set(big)] == big[:20]
        assert [j for j in sent if j in set(medium)] == medium[:20]


def test_the_jobs_of_a_batch_still_expanding_wait_for_its_end(
        database_url: str, tmp_path: Any) -> None:
    # given a batch still expanding, whose first 30 jobs are created
    with fresh_database(database_url, tmp_path) as url:
        ids = waiting_batch_jobs(url, "expanding", 30)
        settings = make_settings(database_url=url)
        sent: list[str] = []
        # when the feeder runs, it sends none of them (they would slow the expansion down)
        assert feed(settings, lambda job_id, queue: sent.append(job_id)) == 0 and sent == []
        # when the batch is expanded, it sends them all, oldest first
        with session_scope(url) as session:
            session.execute(update(Batch).values(status="running"))
        assert feed(settings, lambda job_id, queue: sent.append(job_id)) == 30
        assert sent == ids


def test_feeders_running_at_once_send_each_job_once_and_never_over_the_cap(
        database_url: str, tmp_path: Any) -> None:
    # given a database of its own (no beat feeds it) with 300 batch jobs waiting to be sent,
    # and a cap of 50 in flight
    with fresh_database(database_url, tmp_path) as url:
        waiting = 300
        waiting_batch_jobs(url, "running", waiting)
        settings = make_settings(database_url=url, bulk_max_in_flight=50)
        sent: list[str] = []
        lock = threading.Lock()

        def send(job_id: str, queue: str) -> None:
            with lock:
                sent.append(job_id)

        rounds = 0
        while len(sent) < waiting and rounds < 20:
            rounds += 1
            # when four feeders run at the same moment (beat's, and expansions' after chunks)
            start = threading.Barrier(4)

            def one_feeder(start: threading.Barrier) -> None:
                start.wait(timeout=10)
                feed(settings, send)

            before = len(sent)
            feeders = [threading.Thread(target=one_feeder, args=(start,)) for _ in range(4)]
            for thread in feeders:
                thread.start()
            for thread in feeders:
                thread.join(30)
            # then together they filled the room once: 50 jobs, none sent twice
            this_round = sent[before:]
            assert len(this_round) == len(set(this_round)) == min(50, waiting - before), (
                rounds, len(this_round), len(set(this_round)))
            with session_scope(url) as session:
                in_flight = session.scalar(select(func.count()).select_from(Job).where(
                    Job.status == "queued", Job.lease_expires_at.is_not(None)))
                assert in_flight == len(this_round)
                # (and those jobs finish, which makes room for the next round)
                session.execute(update(Job).where(Job.id.in_(this_round))
                                .values(status="succeeded", lease_expires_at=None))
        # and in the end every job was sent exactly once
        assert len(sent) == len(set(sent)) == waiting, (rounds, len(sent), len(set(sent)))
