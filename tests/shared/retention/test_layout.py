"""`editq storage migrate`: a store written before tenant prefixes, moved into them with no
object lost, and resumed after being killed mid-way (a real database and S3 server)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.jobs.states import new_job_id
from shared.models import Batch, Job, JobInput, LayoutMigration, Upload
from shared.retention.layout import LEGACY_PREFIXES, migrate
from shared.storage import Storage
from shared.tenants import create_api_key, get_or_create_tenant
from tests.conftest import own_database
from tests.helpers import image_bytes, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.every_database]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this module's own: the migration moves every job it can see."""
    with own_database(database_url, tmp_path_factory.mktemp("layout-db")) as url:
        yield url


@pytest.fixture
def settings(database_url: str, s3_url: str) -> Settings:
    from tests.conftest import make_settings

    # A bucket of each test's own: the migration moves every object of the old layout.
    return make_settings(database_url=database_url, s3_endpoint_url=s3_url,
                         s3_bucket=f"editq-layout-{uuid.uuid4().hex[:8]}")


def legacy_store(settings: Settings, storage: Storage, jobs: int) -> dict[str, Any]:
    """Jobs of two tenants in the old layout: one image both tenants sent (one object),
    each job's own input and output, a batch's files, an upload. Answers what it put."""
    with session_scope(settings.database_url) as session:
        create_api_key(session, "layout-a")
        create_api_key(session, "layout-b")
        a = get_or_create_tenant(session, "layout-a").id
        b = get_or_create_tenant(session, "layout-b").id
    shared_image = image_bytes((33, 22), color=(1, 2, 3))
    shared_key = f"inputs/{hashlib.sha256(shared_image).hexdigest()[:2]}/" \
                 f"{hashlib.sha256(shared_image).hexdigest()}"
    storage.put(shared_key, shared_image, "image/png")
    objects: dict[str, bytes] = {shared_key: shared_image}
    rows, now = [], utcnow() - timedelta(hours=1)
    for n in range(jobs):
        job_id, tenant = new_job_id(), (a if n % 2 == 0 else b)
        own = image_bytes((20 + n % 50, 10 + n // 50), color=(n % 256, 9, 9))
        sha = hashlib.sha256(own).hexdigest()
        in_key, out_key = f"inputs/{sha[:2]}/{sha}", f"outputs/{job_id}/0.png"
        objects[in_key], objects[out_key] = own, own[::-1]
        storage.put(in_key, own, "image/png")
        storage.put(out_key, own[::-1], "image/png")
        rows.append({"id": job_id, "tenant_id": tenant, "status": "succeeded",
                     "operation": "grayscale", "model": "local-pillow", "provider": "local",
                     "options": {}, "metadata_": {}, "input_keys": [in_key, shared_key],
                     "outputs": [{"key": out_key, "content_type": "image/png", "width": 1,
                                  "height": 1, "bytes": len(own)}],
                     "attempts": 1, "currency": "USD", "queue": "interactive",
                     "created_at": now, "updated_at": now, "finished_at": now})
    batch_id = f"bat_{uuid.uuid4().hex[:24]}"
    for name in ("items.jsonl", "manifest.jsonl"):
        objects[f"batches/{batch_id}/{name}"] = name.encode()
        storage.put(f"batches/{batch_id}/{name}", name.encode(), "application/x-ndjson")
    upload_id = f"upl_{uuid.uuid4().hex[:24]}"
    objects[f"uploads/{a}/{upload_id}"] = b"upload"
    storage.put(f"uploads/{a}/{upload_id}", b"upload", "image/png")
    with session_scope(settings.database_url) as session:
        session.execute(insert(Job), rows)
        session.add(Batch(id=batch_id, tenant_id=a, kind="items", status="completed",
                          spec={"items_key": f"batches/{batch_id}/items.jsonl"},
                          manifest_key=f"batches/{batch_id}/manifest.jsonl",
                          created_at=now, updated_at=now, finished_at=now))
        session.add(Upload(id=upload_id, tenant_id=a, key=f"uploads/{a}/{upload_id}",
                           content_type="image/png", size=6, created_at=now,
                           expires_at=now + timedelta(days=1)))
    return {"tenants": (a, b), "objects": objects, "batch": batch_id, "upload": upload_id,
            "jobs": [row["id"] for row in rows]}


def assert_moved_with_nothing_lost(settings: Settings, storage: Storage,
                                   seeded: dict[str, Any]) -> None:
    a, b = seeded["tenants"]
    objects = seeded["objects"]
    with session_scope(settings.database_url) as session:
        jobs = list(session.scalars(select(Job).where(Job.id.in_(seeded["jobs"]))))
        uses = {(u.job_id, u.key) for u in session.scalars(select(JobInput))}
        batch = session.scalars(select(Batch).where(Batch.id == seeded["batch"])).one()
        upload = session.get(Upload, seeded["upload"])
    for job in jobs:
        # every key is now under the job's tenant, and serves the bytes the old one did
        for key in [*job.input_keys, *(o["key"] for o in job.outputs)]:
            assert key.startswith(f"tenants/{job.tenant_id}/"), key
            legacy = key.split("/", 2)[2] if "/inputs/" in key else \
                f"outputs/{key.split('/outputs/', 1)[1]}"
            assert storage.get(key) == objects[legacy]
        assert {k for j, k in uses if j == job.id} == set(job.input_keys)
    # the image both tenants sent is now one object each
    shared = next(k for k in objects if k.startswith("inputs/")).rsplit("/", 1)[1]
    assert storage.exists(f"tenants/{a}/inputs/{shared[:2]}/{shared}")
    assert storage.exists(f"tenants/{b}/inputs/{shared[:2]}/{shared}")
    assert storage.get(batch.manifest_key or "") == b"manifest.jsonl"
    assert storage.get(batch.spec["items_key"]) == b"items.jsonl"
    assert upload is not None and storage.get(upload.key) == b"upload"
    # and nothing is left in the old layout
    for prefix in LEGACY_PREFIXES:
        assert storage.client.list_objects_v2(Bucket=storage.bucket,
                                              Prefix=prefix).get("KeyCount", 0) == 0


def test_a_legacy_store_is_moved_into_tenant_prefixes_with_nothing_lost(
        settings: Settings) -> None:
    storage = Storage(settings)
    storage.ensure_bucket()
    seeded = legacy_store(settings, storage, jobs=6)
    done = migrate(settings, storage, chunk=4)
    assert (done["jobs"], done["batches"], done["uploads"], done["missing"]) == (6, 1, 1, []), done
    assert_moved_with_nothing_lost(settings, storage, seeded)
    # and running it again changes nothing
    assert migrate(settings, storage)["jobs"] == 0


def test_a_migration_killed_mid_way_is_resumed_with_nothing_lost(settings: Settings) -> None:
    storage = Storage(settings)
    storage.ensure_bucket()
    seeded = legacy_store(settings, storage, jobs=120)
    env = {**os.environ, "EDITQ_DATABASE_URL": settings.database_url,
           "EDITQ_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
           "EDITQ_S3_BUCKET": settings.s3_bucket, "EDITQ_S3_ACCESS_KEY_ID": "test",
           "EDITQ_S3_SECRET_ACCESS_KEY": "test-secret", "EDITQ_ENVIRONMENT": "test"}
    command = [sys.executable, "-m", "cli.main", "storage", "migrate", "--chunk", "5"]

    def moved() -> int:
        with session_scope(settings.database_url) as session:
            row = session.get(LayoutMigration, "jobs")
            return 0 if row is None else row.cursor

    # given a migration killed (SIGKILL) once it has moved some jobs and not all
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: moved() > 0, 60, "the migration to move a first chunk")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    with session_scope(settings.database_url) as session:
        last_seq = session.scalar(select(Job.seq).order_by(Job.seq.desc()).limit(1))
    assert 0 < moved() < (last_seq or 0), "killed too late to show a resume"
    # then nothing was deleted yet, and a second run finishes the move
    assert all(storage.exists(k) for k in seeded["objects"] if k.startswith("outputs/"))
    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=110)
    assert second.returncode == 0, second.stderr
    assert_moved_with_nothing_lost(settings, storage, seeded)
