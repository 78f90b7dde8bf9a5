"""Retention and deletion, end to end: the API, a worker and beat (its sweep every
second, a released input deleted a second later), moto's S3 server (issue 25).

Every image a tenant stored is under its prefix; a job's images go when its keep time
has passed after it ended, or when the tenant asks; the job keeps its record, events and
costs. An input two jobs of one tenant use stays until neither keeps it; two tenants'
same image are two objects.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.db import session_scope
from shared.models import Job, JobEvent
from shared.storage import Storage, input_key
from shared.tenants import create_api_key
from tests.api_client import ApiClient, ApiError
from tests.conftest import Live
from tests.helpers import image_bytes, tenant_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


# Long enough that looking for a job's images right after it ended comes before the
# sweep may delete them, however busy the machine; short enough to wait for.
KEEP_SECONDS = 6


def tag() -> str:
    return uuid.uuid4().hex[:10]


def key_of(client: ApiClient) -> str:
    return str(client.http.headers["authorization"].split()[1])


def input_of(live: Live, client: ApiClient, image: bytes) -> str:
    return input_key(tenant_of(live.settings.database_url, key_of(client)),
                     hashlib.sha256(image).hexdigest())


def output_keys(live: Live, job_id: str) -> list[str]:
    with session_scope(live.settings.database_url) as session:
        outputs = session.query(Job.outputs).filter(Job.id == job_id).scalar()
    return [o["key"] for o in outputs]


def done(client: ApiClient, image: bytes, **fields: Any) -> dict[str, Any]:
    job = client.submit(image, operation="grayscale", **fields)
    finished = client.wait(job["id"], timeout=60)
    assert finished["status"] == "succeeded", finished
    return finished


@pytest.mark.every_database
def test_retention_deletes_a_jobs_images_on_schedule_and_keeps_its_record(
        live: Live) -> None:
    # given a job that keeps its images a few seconds after it ends (not none: beat's
    # sweep, every second, could otherwise delete them before they are looked for)
    client = live.client(f"ret-now-{tag()}")
    image = image_bytes((70, 50), color=(3, 33, 133))
    keep = KEEP_SECONDS / 86400
    job = done(client, image, retention={"inputs_days": keep, "outputs_days": keep})
    outputs = output_keys(live, job["id"])
    storage = Storage(live.settings)
    stored = storage.exists(outputs[0]), storage.exists(input_of(live, client, image))
    looked = datetime.now(UTC) - datetime.fromisoformat(job["finished_at"])
    assert looked.total_seconds() < KEEP_SECONDS, f"looked {looked} after the end: too late"
    assert stored == (True, True)
    # when its keep time has passed, and then a sweep of beat's (every second here)
    gone = wait_for(lambda: (j := client.get(job["id"]))["data_deleted_at"] and j, 30,
                    "the job's data to be deleted")
    # then its images are gone from storage, and it says when
    assert not storage.exists(outputs[0])
    wait_for(lambda: not storage.exists(input_of(live, client, image)), 30,
             "the released input to be deleted")
    assert gone["outputs"][0]["url"] is None and gone["outputs_deleted_at"]
    # and fetching its output is a 410 problem, not a 500 nor anyone's bytes
    answer = client.http.get(f"/v1/jobs/{job['id']}/outputs/0")
    assert answer.status_code == 410 and answer.json()["code"] == "data_deleted"
    # and it keeps its record, its events and its cost
    assert gone["status"] == "succeeded" and gone["cost"]["actual"] == "0"
    with session_scope(live.settings.database_url) as session:
        kinds = [e for (e,) in session.query(JobEvent.type).filter(JobEvent.job_id == job["id"])]
    assert {"created", "succeeded", "outputs_deleted", "inputs_released"} <= set(kinds)


def test_a_kept_output_is_served_by_a_redirect_to_a_url_that_outlives_nothing(
        live: Live) -> None:
    # given a job whose outputs are kept for about 9 seconds after it ends
    client = live.client(f"ret-url-{tag()}")
    job = done(client, image_bytes((40, 30)), retention={"outputs_days": 0.0001})
    # then its output's URL expires no later than the output does
    url = job["outputs"][0]["url"]
    assert int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0]) <= 9
    # and the link that does not expire redirects to the output while it is kept
    answer = client.http.get(f"/v1/jobs/{job['id']}/outputs/0")
    assert answer.status_code == 307
    assert httpx.get(answer.headers["location"], timeout=10).content == httpx.get(
        url, timeout=10).content
    # and another tenant never gets a URL to it
    other = live.client(f"ret-other-{tag()}")
    assert other.http.get(f"/v1/jobs/{job['id']}/outputs/0").status_code == 404


@pytest.mark.every_database
def test_deleting_a_jobs_data_on_request_keeps_an_input_another_job_still_uses(
        live: Live) -> None:
    # given two jobs of one tenant on the same image
    client = live.client(f"ret-shared-{tag()}")
    image = image_bytes((66, 44), color=(5, 55, 155))
    first, second = done(client, image), done(client, image)
    storage = Storage(live.settings)
    stored = input_of(live, client, image)
    # when the first's data is deleted on request
    answer = client.http.delete(f"/v1/jobs/{first['id']}/data").json()
    # then its outputs went at once, and the input stays: the second still uses it
    assert (answer["outputs_deleted"], answer["inputs_released"],
            answer["inputs_kept_for_other_jobs"]) == (1, 0, 1)
    assert not any(storage.exists(k) for k in output_keys(live, first["id"]))
    assert client.get(first["id"])["data_deleted_at"] is not None
    # when the second's is deleted too, then the input is released and goes
    again = client.http.delete(f"/v1/jobs/{second['id']}/data").json()
    assert (again["inputs_released"], again["inputs_kept_for_other_jobs"]) == (1, 0)
    wait_for(lambda: not storage.exists(stored), 30, "the input to be deleted")


@pytest.mark.every_database
def test_two_tenants_who_sent_the_same_image_each_keep_theirs(live: Live) -> None:
    # given tenants A and B who both sent one image
    a, b = live.client(f"ret-a-{tag()}"), live.client(f"ret-b-{tag()}")
    image = image_bytes((61, 41), color=(7, 77, 177))
    job_a, job_b = done(a, image), done(b, image)
    storage = Storage(live.settings)
    # then it is two objects, each under its tenant
    assert input_of(live, a, image) != input_of(live, b, image)
    # when A deletes its job's data, then B's image (and B's job) are untouched
    a.http.delete(f"/v1/jobs/{job_a['id']}/data").raise_for_status()
    wait_for(lambda: not storage.exists(input_of(live, a, image)), 30, "A's input to go")
    assert storage.exists(input_of(live, b, image))
    assert httpx.get(b.get(job_b["id"])["outputs"][0]["url"], timeout=10).status_code == 200


@pytest.mark.every_database
def test_deleting_a_batchs_data_deletes_every_jobs_and_its_files(live: Live) -> None:
    client = live.client(f"ret-batch-{tag()}")
    items = [{"image": __import__("base64").b64encode(image_bytes((40 + n, 30))).decode(),
              "operation": "grayscale"} for n in range(3)]
    batch = client.create_batch({"items": items})
    finished = wait_for(lambda: (b := client.get_batch(batch["id"]))["status"] == "completed"
                        and b, 60, "the batch to complete")
    assert finished["manifest_url"]
    answer = client.http.delete(f"/v1/batches/{batch['id']}/data").json()
    assert (answer["jobs"], answer["outputs_deleted"], answer["batch_files_deleted"]) == (3, 3, 2)
    jobs = [client.get(r["id"]) for r in client.batch_results(batch["id"])]
    assert all(j["data_deleted_at"] for j in jobs)
    assert client.get_batch(batch["id"])["manifest_url"] is None


def test_a_tenant_is_erased_by_an_admin_key_only(live: Live) -> None:
    client = live.client(f"ret-erase-{tag()}")
    image = image_bytes((52, 32), color=(9, 99, 199))
    job = done(client, image)
    tenant_id = tenant_of(live.settings.database_url, key_of(client))
    # a key that is not an admin's may not
    with pytest.raises(ApiError) as refused:
        client._check(client.http.delete(f"/v1/tenants/{tenant_id}/data"))
    assert refused.value.status == 403
    # an admin key erases every stored image of the tenant
    with session_scope(live.settings.database_url) as session:
        admin = ApiClient(live.api_url, create_api_key(session, f"ret-admin-{tag()}",
                                                       admin=True))
    answer = admin._check(admin.http.delete(f"/v1/tenants/{tenant_id}/data"))
    assert answer["jobs"] >= 1 and answer["outputs_deleted"] >= 1
    storage = Storage(live.settings)
    wait_for(lambda: not any(True for _ in storage.client.list_objects_v2(
        Bucket=storage.bucket, Prefix=f"tenants/{tenant_id}/").get("Contents", [])), 30,
             "the tenant's prefix to be empty")
    # and its costs and records stay
    assert client.get(job["id"])["cost"]["actual"] == "0"
    assert client.http.get("/v1/costs").status_code == 200


def test_reprocessing_skips_jobs_whose_inputs_are_gone_and_says_why(live: Live) -> None:
    client = live.client(f"ret-reprocess-{tag()}")
    kept = done(client, image_bytes((43, 33)))
    gone = done(client, image_bytes((44, 34)))
    client.http.delete(f"/v1/jobs/{gone['id']}/data").raise_for_status()
    dry = client.create_batch({"reprocess": {"filter": {"model": "local-pillow"},
                                             "override": {"operation": "flip"}},
                               "dry_run": True})
    assert dry["count"] == 1
    assert [(e["job_id"], e["code"]) for e in dry["invalid"]] == [(gone["id"], "inputs_deleted")]
    assert kept["id"] not in {e["job_id"] for e in dry["invalid"]}
    assert Decimal(dry["estimated_cost"]) == 0
