"""Webhooks to users through the real path: API, worker, beat dispatching the outbox, and
a real receiver on loopback that verifies Standard Webhooks signatures."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from cli.stack import Stack
from shared.db import session_scope
from shared.tenants import create_api_key
from tests.api_client import ApiClient
from tests.conftest import SIM_KEY, live_env, redis_db
from tests.helpers import b64, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@dataclass
class Receiver:
    """Answers 500 to the first `failures` requests, then 200; keeps what it received."""

    failures: int
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            status = 500 if len(self.received) < self.failures else 200
            self.received.append((headers, body, status))
            return status


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver(failures=3)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = state.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks?token=abc"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class HookStack:
    api_url: str
    database_url: str

    def client(self, tenant: str) -> ApiClient:
        with session_scope(self.database_url) as session:
            return ApiClient(self.api_url, create_api_key(session, tenant))


@pytest.fixture(scope="module")
def hooks(stack: Stack, database_url: str, redis_base: str, s3_url: str,
          bucket: str) -> Iterator[HookStack]:
    sub = Stack(workdir=stack.workdir)
    try:
        sim_url = sub.start_wavespeed_sim(latency="0.2", extra=["--api-key", SIM_KEY])
        sub.env = {
            **live_env(database_url, redis_db(redis_base, "deliveries"), s3_url, bucket,
                       sim_url),
            # A shrunk schedule: the three retries come 0.5 s apart, not 5 s, 5 min, 30 min.
            "EDITQ_WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5,0.5",
            "EDITQ_WEBHOOK_DISPATCH_INTERVAL_SECONDS": "0.2",
            "EDITQ_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        }
        sub.start_worker(name="worker-deliveries", concurrency=4)
        sub.spawn("beat-deliveries", [sys.executable, "-m", "cli.main", "beat",
                                      "--loglevel", "WARNING"])
        _, api_url = sub.start_api()
        yield HookStack(api_url, database_url)
    finally:
        sub.stop()


def test_a_receiver_failing_three_times_gets_the_event_once_with_one_webhook_id(
        hooks: HookStack, receiver: tuple[Receiver, str]) -> None:
    # given a receiver that fails the first three attempts, and a job that names it
    state, url = receiver
    client = hooks.client("hooks-retry")
    secret = client.http.get("/v1/webhook-secret").json()["secret"]
    job = client.submit(image_bytes(), operation="grayscale", webhook_url=url)
    started = time.monotonic()
    done = client.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    # (its long poll is woken by its end, whose outbox row is written in a savepoint: it
    # does not sleep to the poll's deadline, 30 s)
    assert time.monotonic() - started < 15
    # when the outbox is dispatched and retried on the shrunk schedule
    delivery = wait_for(lambda: next((d for d in client.http.get(
        "/v1/webhook-deliveries", params={"job_id": job["id"]}).json()["data"]
        if d["status"] == "delivered"), None), 30, "the delivery to succeed")
    # then it took four attempts, the last accepted, all with the same webhook-id
    assert [status for _, _, status in state.received] == [500, 500, 500, 200]
    ids = {headers["webhook-id"] for headers, _, _ in state.received}
    assert ids == {delivery["webhook_id"]}
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 200]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])
    # and each was signed as Standard Webhooks says, by the tenant's secret
    for headers, body, _ in state.received:
        event = Webhook(secret).verify(body, headers)
        assert event["type"] == "job.succeeded"
        assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
    # and the body is the job exactly as GET returns it (output links aside, fresh each time)
    data = json.loads(state.received[-1][1])["data"]
    current = client.get(job["id"])
    assert {k: v for k, v in data.items() if k != "outputs"} == {
        k: v for k, v in current.items() if k != "outputs"}
    assert [{k: v for k, v in o.items() if k != "url"} for o in data["outputs"]] == [
        {k: v for k, v in o.items() if k != "url"} for o in current["outputs"]]


def test_a_finished_batch_sends_one_signed_batch_completed_with_its_manifest(
        hooks: HookStack, receiver: tuple[Receiver, str]) -> None:
    # given a batch of three grayscale items that names the receiver (which fails the
    # first three attempts)
    state, url = receiver
    client = hooks.client("hooks-batch")
    secret = client.http.get("/v1/webhook-secret").json()["secret"]
    item = {"image": b64(image_bytes()), "operation": "grayscale", "model": "local-pillow"}
    response = client.http.post("/v1/batches", json={"items": [item] * 3, "webhook_url": url})
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    # when its jobs run and it completes, and the outbox is dispatched and retried
    wait_for(lambda: [s for _, _, s in state.received] == [500, 500, 500, 200], 60,
             "batch.completed to be delivered")
    # then every attempt carried the same webhook-id, signed by the tenant's secret
    assert len({headers["webhook-id"] for headers, _, _ in state.received}) == 1
    events = [Webhook(secret).verify(body, headers) for headers, body, _ in state.received]
    assert {e["type"] for e in events} == {"batch.completed"}
    # and the body is the completed batch, whose manifest lists each of its three jobs
    data = events[-1]["data"]
    assert (data["id"], data["status"], data["counts"]["succeeded"]) == (
        batch_id, "completed", 3)
    manifest = httpx.get(data["manifest_url"], timeout=10)
    assert manifest.status_code == 200
    lines = [json.loads(line) for line in manifest.text.splitlines() if line.strip()]
    assert sorted(line["index"] for line in lines) == [0, 1, 2]
    assert {line["status"] for line in lines} == {"succeeded"}
    # and none of its jobs sent an event of its own (the batch subscribed to none)
    deliveries = client.http.get("/v1/webhook-deliveries").json()["data"]
    assert [d["event_type"] for d in deliveries] == ["batch.completed"]
