"""The whole trip on real parts: HTTP to uvicorn, Redis to a Celery worker process, S3.

Runs once per database backend (SQLite always, PostgreSQL when
EDITQ_TEST_DATABASE_URL is set), each with its own API, worker and Redis database.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from PIL import Image
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Job, JobEvent
from shared.money.ledger import charge, charges_for
from shared.providers.pricing import Price
from shared.queue import enqueue_run, make_celery
from shared.storage import Storage, input_key
from simulators.image_host import image
from tests.api_client import ApiClient, ApiError
from tests.conftest import Live
from tests.helpers import image_bytes, tenant_of, text_bomb_png, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def drained(live: Live) -> bool:
    """Every message taken off the queue and acknowledged (acks are late: after the run)."""
    broker = redis.Redis.from_url(live.settings.broker_url)
    return broker.llen("interactive") == 0 and broker.hlen("unacked") == 0


def test_job_travels_api_worker_s3_and_back(live: Live) -> None:
    # given a tenant and a 120x80 PNG
    client = live.client("e2e-trip")
    source = image_bytes((120, 80))
    # when it is submitted over HTTP for a prompted edit
    job = client.submit(source, operation="general_edit", prompt="grayscale, then rotate 90",
                        model="local-pillow")
    assert job["status"] == "queued"
    # then the worker process finishes it
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", (done, live.worker.log_tail())
    assert done["attempts"] == 1
    assert done["cost"]["actual"] == "0"
    [output] = done["outputs"]
    # and the presigned URL serves an image from the S3 server that Pillow opens
    assert output["url"].startswith(live.settings.s3_endpoint_url or "")
    data = httpx.get(output["url"], timeout=10).raise_for_status().content
    img = Image.open(io.BytesIO(data))
    assert img.size == (80, 120) == (output["width"], output["height"])  # rotated
    assert img.mode == "L"  # grayscale
    assert output["bytes"] == len(data)
    # and the timeline tells the story once
    events = client.http.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert [e["type"] for e in events] == ["created", "started", "succeeded"]


def test_readiness_checks_the_real_database_broker_and_storage(live: Live) -> None:
    ready = httpx.get(live.api_url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_long_poll_returns_as_soon_as_the_job_is_done(live: Live) -> None:
    client = live.client("e2e-wait")
    job = client.submit(image_bytes(), operation="flip")
    done = client.get(job["id"], wait=30)
    assert done["status"] == "succeeded"


def test_duplicated_run_messages_run_the_job_once(live: Live) -> None:
    # given a job that is submitted (one message) and then sent twice more
    client = live.client("e2e-dupes")
    job = client.submit(image_bytes((64, 64)), operation="blur", options={"radius": 1})
    celery = make_celery(live.settings, name="test-producer")
    for _ in range(2):
        enqueue_run(celery, job["id"])
    # when the worker has processed every message
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded"

    wait_for(lambda: drained(live), 30, "the worker to take all three messages")
    # then it was claimed and finished exactly once
    with session_scope(live.settings.database_url) as session:
        counts = dict(session.execute(
            select(JobEvent.type, func.count()).where(JobEvent.job_id == job["id"])
            .group_by(JobEvent.type)).all())
    assert counts == {"created": 1, "started": 1, "succeeded": 1}
    assert client.get(job["id"])["attempts"] == 1


def test_cancel_of_queued_job_is_never_run(live: Live) -> None:
    # given a job canceled before any worker could claim it (its message is held back)
    client = live.client("e2e-cancel")
    from shared.jobs.submission import EditRequest, submit_job
    from shared.services import Services
    from shared.tenants import authenticate

    with session_scope(live.settings.database_url) as session:
        principal = authenticate(session, client.http.headers["authorization"].split()[1])
        job, _ = submit_job(session, Services(live.settings), principal,
                            EditRequest(images=[image_bytes()], operation="grayscale"))
    canceled = client.http.post(f"/v1/jobs/{job.id}/cancel").json()
    assert canceled["status"] == "canceled"
    # when its message arrives late
    enqueue_run(make_celery(live.settings, name="test-producer"), job.id)

    wait_for(lambda: drained(live), 30, "the worker to take the message")
    # then nothing ran
    after = client.get(job.id)
    assert after["status"] == "canceled" and after["outputs"] == [] and after["attempts"] == 0


@pytest.mark.every_database
def test_a_burst_of_120_concurrent_submissions_is_all_accepted(live: Live) -> None:
    # given more requests in flight than the API has threads (40) or connections
    from concurrent.futures import ThreadPoolExecutor

    client = live.client("e2e-burst")
    key = client.http.headers["authorization"].split()[1]
    image = image_bytes((40, 30))

    def submit(n: int) -> dict[str, Any]:
        # (a client per caller, as 120 users would have: one httpx.Client shared by 120
        # threads once failed here with EBADF on its own socket, under a loaded machine)
        own = ApiClient(live.api_url, key)
        try:
            return own.submit(image, operation="grayscale", metadata={"n": n})
        finally:
            own.http.close()

    # when they all arrive at once
    with ThreadPoolExecutor(120) as pool:
        jobs = list(pool.map(submit, range(120)))
    # then every one was accepted (no pool/thread deadlock, no 500) and runs
    assert len({j["id"] for j in jobs}) == 120
    done = [client.wait(j["id"], timeout=60)["status"] for j in jobs]
    assert done.count("succeeded") == 120


def test_a_portrait_phone_photo_comes_back_upright(live: Live) -> None:
    # given a 120x80 JPEG whose EXIF says to turn it a quarter (a phone's portrait photo)
    from tests.shared.test_images import TestOrientation

    client = live.client("e2e-exif")
    job = client.submit(TestOrientation.portrait_photo(), operation="grayscale")
    # then the job was checked at the size it is shown, 80x120
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", (done, live.worker.log_tail())
    [output] = done["outputs"]
    # and the output is upright: 80 wide, 120 high
    img = Image.open(io.BytesIO(httpx.get(output["url"], timeout=10).content))
    assert img.size == (80, 120) == (output["width"], output["height"])


@pytest.mark.every_database
def test_five_wavespeed_jobs_are_charged_once_each_with_no_false_alarm(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    # given five jobs of four WaveSpeed models (issue 22: on PostgreSQL each success logged
    # "charged already", because the ledger read a driver's row count of -1)
    client = live.client("e2e-ledger")
    models = ["qwen-edit", "qwen-edit", "seededit-v3", "flux-kontext-pro", "hidream-e1-full"]
    sizes = live.log_sizes()
    jobs = [client.submit(image_bytes((64 + 8 * n, 48)), prompt="make the sky purple",
                          model=model) for n, model in enumerate(models)]
    # when they run
    done = [client.wait(job["id"], timeout=60) for job in jobs]
    # then each succeeded with one ledger row at its estimate, and the job's cost is the
    # ledger's sum
    assert [d["status"] for d in done] == ["succeeded"] * 5, live.worker.log_tail()
    with session_scope(live.settings.database_url) as session:
        rows = {job["id"]: charges_for(session, job["id"]) for job in jobs}
    assert sum(len(r) for r in rows.values()) == 5
    for job, finished in zip(jobs, done, strict=True):
        [row] = rows[job["id"]]
        assert (row.attempt, row.amount) == (1, Decimal(job["cost"]["estimated"]))
        assert Decimal(finished["cost"]["actual"]) == row.amount
    # and the worker logged no "charged already", nor any other error
    assert live.errors_since(sizes) == []
    # when one of those calls is charged again, deliberately
    caplog.set_level(logging.ERROR, logger="shared.money.ledger")
    with session_scope(live.settings.database_url) as session:
        job_row = session.scalars(select(Job).where(Job.id == jobs[0]["id"])).one()
        again = charge(session, job_row, Price(units=Decimal(1), unit="image",
                                               unit_price=Decimal("0.02"), currency="USD",
                                               rule="flat", taken=date.today(),
                                               source="test"), reason="succeeded")
    # then it answers False, writes nothing, and says so in one ERROR line
    assert again is False
    with session_scope(live.settings.database_url) as session:
        assert len(charges_for(session, jobs[0]["id"])) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"job {jobs[0]['id']}: attempt 1 is charged already; not charging it again"]


@pytest.mark.every_database
@pytest.mark.parametrize("model, orientation", [("local-pillow", None), ("qwen-edit", 6)])
def test_an_input_the_worker_cannot_load_fails_the_job_at_once_and_uncharged(
        live: Live, model: str, orientation: int | None) -> None:
    # given an input the worker's decoder refuses (a PNG text chunk inflating past
    # Pillow's cap), stored before the API checked for such things: it is put under the
    # key of a valid image, which the API then finds stored already (issue 23: local-pillow
    # crashed and the job failed 600 s later as "may have been billed"; qwen-edit crashed
    # turning it upright and was run again and again as worker_lost)
    bomb = text_bomb_png(orientation=orientation)
    # (turned, a valid image is read by the worker to be turned upright, as a job from
    # before inputs were walked would be read: an upright one is handed to WaveSpeed by
    # URL, checked by this API when it was submitted)
    valid = (image(f"unloadable-{uuid.uuid4().hex}", "png", orientation=orientation)
             if orientation else image_bytes((64, 48), color=(177, 77, 7)))
    storage = Storage(live.settings)
    client = live.client(f"e2e-unloadable-{model}")
    tenant_id = tenant_of(live.settings.database_url,
                          client.http.headers["authorization"].split()[1])
    storage.put(input_key(tenant_id, hashlib.sha256(valid).hexdigest()), bomb, "image/png")
    # when a job of it runs
    job = client.submit(valid, model=model, prompt="make it blue",
                        operation="general_edit" if model != "local-pillow" else "grayscale")
    done = client.wait(job["id"], timeout=30)
    # then it failed on its first attempt as invalid_image, and cost nothing
    assert (done["status"], done["error"]["code"], done["attempts"]) == (
        "failed", "invalid_image", 1), done
    assert done["cost"]["actual"] == "0"
    with session_scope(live.settings.database_url) as session:
        assert charges_for(session, job["id"]) == []
    # and the API refuses such an image itself
    with pytest.raises(ApiError) as refused:
        client.submit(bomb, operation="grayscale")
    assert (refused.value.status, refused.value.problem["code"]) == (422, "invalid_image")
