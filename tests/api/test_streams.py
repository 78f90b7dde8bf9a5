"""GET /v1/jobs/{id}/stream and its batch and comparison siblings, through the real stack:
events as the job moves, Last-Event-ID resuming without loss, and queue_position."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from shared.db import session_scope
from shared.jobs import states
from shared.jobs.progress import queue_position
from shared.models import Job
from shared.tenants import get_or_create_tenant
from tests.conftest import Live
from tests.helpers import b64, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@dataclass
class Event:
    id: str | None
    type: str
    data: dict[str, Any]
    received: float  # time.time() when its last line arrived


def read_events(response: httpx.Response, limit: int | None = None) -> Iterator[Event]:
    """Parse text/event-stream as a browser does (comments skipped)."""
    fields: dict[str, str] = {}
    count = 0
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if "data" in fields:
                yield Event(fields.get("id"), fields.get("event", "message"),
                            json.loads(fields["data"]), time.time())
                count += 1
                if limit is not None and count >= limit:
                    return
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def stream(live: Live, key: str, path: str, **headers: str) -> Any:
    return httpx.stream("GET", f"{live.api_url}{path}", timeout=httpx.Timeout(60, connect=5),
                        headers={"Authorization": f"Bearer {key}", **headers})


@pytest.fixture
def slow_wavespeed(live: Live) -> Iterator[None]:
    with live.wavespeed_latency("1.5"):
        yield


def key_of(client: Any) -> str:
    return str(client.http.headers["authorization"].split()[1])


def test_a_job_streams_each_event_and_ends_at_once(live: Live, slow_wavespeed: None) -> None:
    # given a job on a provider that takes a while
    api = live.client("streams-end")
    job = api.submit(image_bytes(), model="qwen-edit", prompt="make it blue")
    # when its stream is read to the end
    with stream(live, key_of(api), f"/v1/jobs/{job['id']}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response))
    # then every event of the job came, in order, each with the job as it is
    listed = api.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert [e.id for e in events] == [str(e["id"]) for e in listed]
    assert [e.type for e in events] == [e["type"] for e in listed]
    last = events[-1]
    assert last.type == "succeeded" and last.data["job"]["status"] == "succeeded"
    assert last.data["job"]["cost"]["actual"] == "0.02"
    # and the terminal event arrived within half a second of the job's finish
    finished = datetime.fromisoformat(last.data["job"]["finished_at"].replace("Z", "+00:00"))
    assert last.received - finished.timestamp() < 0.5, last.received - finished.timestamp()


def test_last_event_id_resumes_without_loss(live: Live, slow_wavespeed: None) -> None:
    # given a stream dropped after its first event
    api = live.client("streams-resume")
    job = api.submit(image_bytes(), model="qwen-edit", prompt="make it blue")
    with stream(live, key_of(api), f"/v1/jobs/{job['id']}/stream") as response:
        [first] = list(read_events(response, limit=1))
    assert first.type == "created"
    # when the job moves on meanwhile, and the stream is opened again from that event
    wait_for(lambda: api.get(job["id"])["status"] != "queued", 30, "the job to start")
    with stream(live, key_of(api), f"/v1/jobs/{job['id']}/stream",
                **{"Last-Event-ID": str(first.id)}) as response:
        rest = list(read_events(response))
    # then together they are every event, once each
    listed = [str(e["id"]) for e in api.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    assert [first.id] + [e.id for e in rest] == listed
    assert rest[-1].type == "succeeded"
    # and resuming after the end gives the terminal event again, then the end
    with stream(live, key_of(api), f"/v1/jobs/{job['id']}/stream",
                **{"Last-Event-ID": listed[-1]}) as response:
        again = list(read_events(response))
    assert [e.id for e in again] == [listed[-1]]


def test_a_stream_is_the_tenants_own_and_its_header_is_checked(live: Live) -> None:
    api, other = live.client("streams-own"), live.client("streams-other")
    job = api.submit(image_bytes(), operation="grayscale")
    with stream(live, key_of(other), f"/v1/jobs/{job['id']}/stream") as response:
        assert response.status_code == 404
        assert json.loads(response.read())["code"] == "not_found"
    with stream(live, key_of(api), f"/v1/jobs/{job['id']}/stream",
                **{"Last-Event-ID": "x1"}) as response:
        assert response.status_code == 422


def test_a_batch_streams_its_progress_to_the_end(live: Live) -> None:
    api = live.client("streams-batch")
    made = api.create_batch({"items": [{"image": b64(image_bytes()), "operation": op}
                                       for op in ("grayscale", "flip", "grayscale")]})
    with stream(live, key_of(api), f"/v1/batches/{made['id']}/stream") as response:
        events = list(read_events(response))
    assert all(e.type == "progress" for e in events)
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
    done = [e.data["progress"]["done"] for e in events]
    assert done == sorted(done) and events[-1].data["status"] == "completed"
    assert events[-1].data["counts"]["succeeded"] == 3


def test_a_comparison_streams_until_every_model_is_done(live: Live) -> None:
    api = live.client("streams-compare")
    made = api.compare(image_bytes(), ["qwen-edit", "seededit-v3"], prompt="make it blue")
    with stream(live, key_of(api), f"/v1/comparisons/{made['id']}/stream") as response:
        events = list(read_events(response))
    assert events[-1].data["status"] == "completed"
    assert {r["status"] for r in events[-1].data["results"]} == {"succeeded"}


def test_a_long_poll_answers_as_the_job_ends(live: Live, slow_wavespeed: None) -> None:
    # given a job that takes about 1.5 s
    api = live.client("streams-wait")
    job = api.submit(image_bytes(), model="qwen-edit", prompt="make it blue")
    # when it is long-polled, then the answer comes as it ends, not at the wait's end
    started = time.monotonic()
    answer = api.http.get(f"/v1/jobs/{job['id']}", params={"wait": 30}, timeout=40).json()
    assert answer["status"] == "succeeded" and time.monotonic() - started < 10
    finished = datetime.fromisoformat(answer["finished_at"].replace("Z", "+00:00"))
    assert time.time() - finished.timestamp() < 0.5


@pytest.mark.every_database
def test_queue_position_falls_to_zero_as_the_jobs_ahead_start(database_url: str) -> None:
    # given five queued jobs on one queue and one on another (queues of this test's own:
    # the database is shared with other tests, whose queued jobs would count too)
    mine, other = f"q-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, f"queue-{time.time_ns()}")
        ids = []
        for n in range(6):
            job = Job(id=states.new_job_id(), tenant_id=tenant.id, status=states.QUEUED,
                      operation="grayscale", model="local-pillow", provider="local",
                      queue=other if n == 2 else mine)
            session.add(job)
            session.flush()
            ids.append(job.id)
    last = ids[-1]

    def position() -> int | None:
        with session_scope(database_url) as session:
            return queue_position(session, session.query(Job).filter(Job.id == last).one())

    # then the last is behind the four interactive jobs made before it (not the bulk one)
    ahead = [ids[n] for n in (0, 1, 3, 4)]
    assert position() == 4
    # and moves up one place as each ahead starts, to 0
    seen = []
    for job_id in ahead:
        with session_scope(database_url) as session:
            assert states.claim(session, job_id, 60) is not None
        seen.append(position())
    assert seen == [3, 2, 1, 0]
    # and has none once it starts itself
    with session_scope(database_url) as session:
        states.claim(session, last, 60)
    assert position() is None


def test_the_job_view_says_its_queue_position(live: Live) -> None:
    api = live.client("streams-position")
    job = api.submit(image_bytes(), operation="grayscale")
    view = api.get(job["id"])
    assert "queue_position" in view
    assert (view["queue_position"] is None) == (view["status"] != "queued")


def test_a_client_gone_mid_body_is_no_error(live: Live) -> None:
    # given a multipart quote whose body stops half-way, then the connection closes
    api = live.client("streams-gone")
    start = len(live.api.log_path.read_text(errors="replace"))
    host, port = live.api_url.removeprefix("http://").split(":")
    head = (f"POST /v1/quotes HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {key_of(api)}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n")
    # then the API notes it in a line of its own, and nothing else: no error, no traceback
    log = live.api.log_path

    def said() -> str:
        return log.read_text(errors="replace")[start:]

    wait_for(lambda: "client disconnected during POST /v1/quotes" in said(), 10,
             "the API to notice the client left")
    assert "Traceback" not in said() and " ERROR " not in said()
