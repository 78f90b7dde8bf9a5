"""Images by reference, end to end: the API, a worker, the image host and the WaveSpeed
simulator over real HTTP, moto's S3 server (issue 24).

A job's image may be inline (base64, a data URI), an https:// URL (here the loopback
image host, allowed by EDITQ_INPUT_ALLOWED_HOSTS), or a direct upload's id; the worker
fetches references through the address guard. What cannot be fetched or is not an
image fails its job with its code, uncharged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.db import session_scope
from shared.models import Job
from shared.money.ledger import charges_for
from shared.storage import Storage, input_key
from simulators.image_host import image
from tests.api_client import ApiClient, ApiError
from tests.conftest import Live
from tests.helpers import image_bytes, tenant_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def name() -> str:
    return uuid.uuid4().hex[:10]


def uncharged(live: Live, job_id: str) -> bool:
    with session_scope(live.settings.database_url) as session:
        return charges_for(session, job_id) == []


def stored_input(live: Live, job_id: str) -> bytes:
    with session_scope(live.settings.database_url) as session:
        job = session.query(Job).filter(Job.id == job_id).one()
        return Storage(live.settings).get(job.input_keys[0])


@pytest.mark.every_database
def test_a_job_by_url_is_accepted_at_once_and_fetched_by_the_worker(live: Live) -> None:
    # given an image on a web server (the loopback image host)
    client = live.client(f"ref-url-{name()}")
    picture = name()
    url = f"{live.image_url}/img/{picture}.png?w=80&h=60"
    # when a job names it by URL
    job = client.submit(url, operation="grayscale")
    # then it is accepted at once, and the worker fetches, checks and stores it
    assert job["status"] == "queued"
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert stored_input(live, job["id"]) == image(picture, "png", 80, 60)
    assert done["outputs"][0]["width"] == 80


def test_a_job_by_direct_upload_never_sends_its_bytes_through_the_api(live: Live) -> None:
    # given an image uploaded straight to storage through a presigned request
    client = live.client(f"ref-upload-{name()}")
    data = image_bytes((90, 70), color=(9, 99, 199))
    upload_id = client.upload(data)
    assert upload_id.startswith("upl_")
    # when a job names it
    job = client.submit(upload_id, operation="grayscale")
    done = client.wait(job["id"], timeout=60)
    # then the worker used those bytes
    assert done["status"] == "succeeded", done
    assert stored_input(live, job["id"]) == data


def test_a_job_by_data_uri_works_as_before(live: Live) -> None:
    client = live.client(f"ref-data-{name()}")
    data = image_bytes((50, 40))
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    done = client.wait(client.submit(uri, operation="grayscale")["id"], timeout=60)
    assert done["status"] == "succeeded" and stored_input(live, done["id"]) == data


def test_wavespeed_is_handed_presigned_urls_of_the_stored_inputs(live: Live) -> None:
    # given a WaveSpeed job (the stack hands providers that fetch URLs their inputs' URLs)
    client = live.client(f"ref-provider-{name()}")
    data = image_bytes((96, 64), color=(1, 2, 3))
    job = client.submit(data, prompt="make it blue", model="qwen-edit")
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    # then the simulator was sent a URL of our storage, not the bytes, and fetched them
    with session_scope(live.settings.database_url) as session:
        request_id = session.query(Job.provider_request_id).filter(Job.id == job["id"]).scalar()
    log = httpx.get(f"{live.sim_url}/_sim/requests", params={"limit": 1000}, timeout=10).json()
    entries = log["requests"] if isinstance(log, dict) else log
    sent = next(e for e in entries if e.get("id") == request_id)["body"]["image"]
    assert sent.startswith(live.settings.s3_endpoint_url or "http")
    tenant_id = tenant_of(live.settings.database_url,
                          client.http.headers["authorization"].split()[1])
    assert input_key(tenant_id, hashlib.sha256(data).hexdigest()) in sent
    assert Decimal(done["cost"]["actual"]) == Decimal("0.02")


def refused_at_submit(client: ApiClient, image_field: str) -> dict[str, Any]:
    with pytest.raises(ApiError) as refused:
        client.submit(image_field, operation="grayscale")
    assert refused.value.status == 422
    return refused.value.problem


def test_references_refused_at_submit_name_their_reason(live: Live) -> None:
    client = live.client(f"ref-refused-{name()}")
    other = live.client(f"ref-other-{name()}")
    # a private address, plain http to a host not allowed, another tenant's upload, an
    # unknown upload id: each a 422 input_refused, before any job exists
    theirs = other.upload(image_bytes())
    for field, says in (("https://10.0.0.7/cat.png", "not a public address"),
                        ("http://example.com/cat.png", "must be https"),
                        (theirs, "no upload"),
                        ("upl_" + "0" * 24, "no upload")):
        problem = refused_at_submit(client, field)
        assert problem["code"] == "input_refused" and says in problem["detail"], problem
    assert client.http.get("/v1/jobs").json()["data"] == []


def test_an_expired_upload_is_refused(live: Live) -> None:
    client = live.client(f"ref-expired-{name()}")
    upload_id = client.upload(image_bytes())
    from sqlalchemy import update

    from shared.db import utcnow
    from shared.models import Upload
    with session_scope(live.settings.database_url) as session:
        session.execute(update(Upload).where(Upload.id == upload_id)
                        .values(expires_at=utcnow()))
    problem = refused_at_submit(client, upload_id)
    assert problem["code"] == "input_refused" and "expired" in problem["detail"]


@pytest.mark.parametrize("path, code, says", [
    ("/status/404", "input_unreachable", "answered 404"),
    ("/html-as-png", "invalid_image", "could not be decoded"),
    ("/page", "input_refused", "text/html, not an image"),
    ("/redirect?to=http://127.0.0.1:9/cat.png", "input_refused", "is not https"),
    ("/redirect?to=https://127.0.0.1:9/cat.png", "input_refused", "loopback"),
    ("/big?mb=11", "input_refused", "over the limit"),
])
def test_a_reference_the_worker_cannot_use_fails_its_job_uncharged(
        live: Live, path: str, code: str, says: str) -> None:
    # given a URL that is accepted by its form, and that the worker cannot use
    client = live.client(f"ref-fails-{name()}")
    job = client.submit(f"{live.image_url}{path}", operation="grayscale")
    # when the worker tries it
    done = client.wait(job["id"], timeout=60)
    # then the job failed with the reason's code, at its first attempt, and cost nothing
    assert (done["status"], done["error"]["code"], done["attempts"]) == (
        "failed", code, 1), done
    assert says in done["error"]["message"], done["error"]
    assert done["cost"]["actual"] == "0" and uncharged(live, job["id"])


def test_a_url_that_resolves_to_a_private_address_is_refused_by_the_worker(
        live: Live) -> None:
    # given https to a name (so its form passes) that resolves to loopback
    client = live.client(f"ref-resolves-{name()}")
    job = client.submit("https://localhost:9/cat.png", operation="grayscale")
    done = client.wait(job["id"], timeout=60)
    assert (done["status"], done["error"]["code"]) == ("failed", "input_refused"), done
    assert "localhost" in done["error"]["message"] and uncharged(live, job["id"])


def test_an_error_never_shows_a_urls_query(live: Live) -> None:
    client = live.client(f"ref-secret-{name()}")
    job = client.submit(f"{live.image_url}/status/403?X-Amz-Signature=s3cr3t",
                        operation="grayscale")
    done = client.wait(job["id"], timeout=60)
    assert done["error"]["code"] == "input_unreachable"
    assert "s3cr3t" not in done["error"]["message"]


def finished_batch(client: ApiClient, batch_id: str, timeout: float) -> dict[str, Any]:
    return wait_for(lambda: (b := client.get_batch(batch_id))["status"] in (
        "completed", "canceled") and b, timeout, f"batch {batch_id} to finish")


def test_a_batch_of_1000_url_items_runs_every_job(live: Live) -> None:
    # given a JSONL of 1,000 items by URL (50 images, each named 20 times)
    client = live.client(f"ref-batch-{name()}")
    tag = name()
    lines = "\n".join(json.dumps({"image": f"{live.image_url}/img/{tag}-{n % 50}.png",
                                  "operation": "grayscale"}) for n in range(1000))
    # when it is submitted: accepted without a fetch, expanded in chunks, run
    batch = client.submit_batch(lines.encode())
    assert batch["total"] == 1000
    done = finished_batch(client, batch["id"], 100)
    # then every job succeeded, each on the image its URL named
    assert (done["status"], done["counts"]["succeeded"]) == ("completed", 1000), done
    first = next(client.batch_results(batch["id"]))
    assert stored_input(live, first["id"]) == image(f"{tag}-0", "png")


def test_a_bucket_source_of_1000_objects_runs_one_job_per_image(live: Live) -> None:
    # given 1,000 images under a prefix of an allowed source bucket, and other files
    storage = Storage(live.settings, source=live.source_bucket)
    with contextlib.suppress(Exception):
        storage.client.create_bucket(Bucket=live.source_bucket)
    prefix = f"photos-{name()}/"
    pictures = {f"{prefix}{n:04d}.png": image(f"{prefix}{n % 40}", "png") for n in range(1000)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: storage.put(item[0], item[1], "image/png"),
                      pictures.items()))
    storage.put(f"{prefix}notes.txt", b"not an image", "text/plain")
    client = live.client(f"ref-source-{name()}")
    source = {"bucket": live.source_bucket, "prefix": prefix, "limit": 5000}
    # when a dry run counts it, then it is run
    dry = client.create_batch({"source": source, "defaults": {"operation": "grayscale"},
                               "dry_run": True})
    assert dry["count"] == 1000
    batch = client.create_batch({"source": source, "defaults": {"operation": "grayscale"}})
    done = finished_batch(client, batch["id"], 100)
    # then it made one job per image object (the limit admitted at first is released),
    # each on its own object
    assert (done["status"], done["total"], done["counts"]["succeeded"]) == (
        "completed", 1000, 1000), done
    results = list(client.batch_results(batch["id"]))
    assert stored_input(live, results[7]["id"]) == pictures[f"{prefix}0007.png"]


def test_a_source_bucket_not_allowed_is_refused(live: Live) -> None:
    client = live.client(f"ref-source-refused-{name()}")
    with pytest.raises(ApiError) as refused:
        client.create_batch({"source": {"bucket": live.settings.s3_bucket, "limit": 10},
                             "defaults": {"operation": "grayscale"}})
    assert (refused.value.status, refused.value.problem["code"]) == (422, "invalid_input")
    assert "not a source" in refused.value.problem["detail"]
