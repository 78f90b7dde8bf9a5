"""Moving a store written before tenant prefixes into them (`editq storage migrate`).

Before, inputs were content-addressed across the deployment (`inputs/<sha>`: an image
two tenants sent was one object), outputs lived under `outputs/<job>/`, a batch's files
under `batches/<id>/`, uploads under `uploads/<tenant>/`. Now everything is under
`tenants/<id>/`. Each object is moved the only safe way:

1. **copy** it to its tenant's key (an input two tenants used becomes two objects);
2. **verify** the copy (its size, read back);
3. **switch** the rows that name it (the job's inputs, mask and outputs, what it uses;
   a batch's files; an upload), in one transaction per chunk with the stage's cursor;
4. **delete** the old objects, last, once no row names one any more.

Every step can run again: a copy that exists with the right size is not made twice, a
row already switched is left, and the cursor says where to resume. A run killed at any
point is resumed by running it again; nothing is deleted before every row has moved.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.models import Batch, Job, JobInput, LayoutMigration, Upload
from shared.storage import Storage, batch_key, input_key, output_key, upload_key

LEGACY_PREFIXES = ("inputs/", "outputs/", "batches/", "uploads/")
_LEGACY_INPUT = re.compile(r"^inputs/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})$")
_LEGACY_OUTPUT = re.compile(r"^outputs/(?P<job>[^/]+)/(?P<index>\d+)\.(?P<ext>\w+)$")


def is_legacy(key: str | None) -> bool:
    return bool(key) and key.startswith(LEGACY_PREFIXES)  # type: ignore[union-attr]


def new_key(tenant_id: str, key: str) -> str:
    """Where a legacy object of this tenant goes."""
    if match := _LEGACY_INPUT.match(key):
        return input_key(tenant_id, match["sha"])
    if match := _LEGACY_OUTPUT.match(key):
        return output_key(tenant_id, match["job"], int(match["index"]), match["ext"])
    if key.startswith("batches/"):
        _, batch_id, name = key.split("/", 2)
        return batch_key(tenant_id, batch_id, name)
    if key.startswith("uploads/"):
        return upload_key(tenant_id, key.rsplit("/", 1)[-1])
    raise ValueError(f"{key!r} is not of the old layout")


def _copy(storage: Storage, old: str, new: str) -> None:
    """Copy and verify (idempotent: an existing copy of the right size is kept)."""
    size = storage.client.head_object(Bucket=storage.bucket, Key=old)["ContentLength"]
    try:
        if storage.client.head_object(Bucket=storage.bucket, Key=new)["ContentLength"] == size:
            return
    except ClientError:
        pass
    storage.client.copy_object(Bucket=storage.bucket, Key=new,
                               CopySource={"Bucket": storage.bucket, "Key": old})
    copied = storage.client.head_object(Bucket=storage.bucket, Key=new)["ContentLength"]
    if copied != size:
        raise RuntimeError(f"copy of {old} to {new} has {copied} bytes, not {size}")


def _move(storage: Storage, tenant_id: str, key: str | None, missing: list[str]) -> str | None:
    """The key's new name, the object copied there (a legacy key whose object is gone is
    noted in `missing` and switched all the same: nothing is there to lose)."""
    if not is_legacy(key):
        return key
    assert key is not None
    new = new_key(tenant_id, key)
    try:
        _copy(storage, key, new)
    except ClientError:
        missing.append(key)
    return new


def _cursor(session: Session, stage: str) -> LayoutMigration:
    row = session.get(LayoutMigration, stage)
    if row is None:
        row = LayoutMigration(stage=stage, cursor=0)
        session.add(row)
        session.flush()
    return row


def migrate(settings: Settings, storage: Storage, *, chunk: int = 100,
            say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run (or resume) the move; answers what each stage did."""
    done: dict[str, Any] = {"jobs": 0, "batches": 0, "uploads": 0, "missing": [],
                            "old_objects_deleted": 0}
    while moved := _jobs_chunk(settings, storage, chunk, done["missing"]):
        done["jobs"] += moved
        say(f"jobs: {done['jobs']} moved")
    done["batches"] = _batches(settings, storage, done["missing"])
    done["uploads"] = _uploads(settings, storage, done["missing"])
    done["old_objects_deleted"] = _delete_old(settings, storage)
    with session_scope(settings.database_url) as session:
        _cursor(session, "deleted").finished_at = utcnow()
    say(f"done: {done['jobs']} jobs, {done['batches']} batches, {done['uploads']} uploads "
        f"moved, {done['old_objects_deleted']} old objects deleted")
    return done


def _jobs_chunk(settings: Settings, storage: Storage, chunk: int, missing: list[str]) -> int:
    with session_scope(settings.database_url) as session:
        cursor = _cursor(session, "jobs")
        jobs = list(session.scalars(select(Job).where(Job.seq > cursor.cursor)
                                    .order_by(Job.seq).limit(chunk)))
        for job in jobs:
            keys = [_move(storage, job.tenant_id, k, missing) for k in job.input_keys or []]
            mask = _move(storage, job.tenant_id, job.mask_key, missing)
            outputs = [{**out, "key": _move(storage, job.tenant_id, out.get("key"), missing)}
                       for out in job.outputs or []]
            refs = job.input_refs
            if refs:
                refs = {**refs, "images": [
                    {"key": _move(storage, job.tenant_id, r["key"], missing)} if "key" in r
                    else r for r in refs.get("images") or []]}
            session.execute(update(Job).where(Job.id == job.id).values(
                input_keys=keys, mask_key=mask, outputs=outputs, input_refs=refs)
                .execution_options(synchronize_session=False))
            session.execute(delete(JobInput).where(JobInput.job_id == job.id))
            for key in sorted({k for k in [*keys, mask] if k}):
                session.add(JobInput(job_id=job.id, tenant_id=job.tenant_id, key=key))
        if jobs:
            cursor.cursor = jobs[-1].seq
        return len(jobs)


def _batches(settings: Settings, storage: Storage, missing: list[str]) -> int:
    moved = 0
    with session_scope(settings.database_url) as session:
        for batch in list(session.scalars(select(Batch).order_by(Batch.seq))):
            items, manifest = batch.spec.get("items_key"), batch.manifest_key
            if not (is_legacy(items) or is_legacy(manifest)):
                continue
            spec = {**batch.spec, "items_key": _move(storage, batch.tenant_id, items, missing)}
            session.execute(update(Batch).where(Batch.id == batch.id).values(
                spec=spec if items else batch.spec,
                manifest_key=_move(storage, batch.tenant_id, manifest, missing))
                .execution_options(synchronize_session=False))
            moved += 1
    return moved


def _uploads(settings: Settings, storage: Storage, missing: list[str]) -> int:
    moved = 0
    with session_scope(settings.database_url) as session:
        for upload in list(session.scalars(select(Upload))):
            if is_legacy(upload.key):
                upload.key = _move(storage, upload.tenant_id, upload.key, missing) or ""
                moved += 1
    return moved


def _delete_old(settings: Settings, storage: Storage) -> int:
    """Every object left under the old prefixes: no row names one now."""
    deleted = 0
    for prefix in LEGACY_PREFIXES:
        deleted += storage.delete_prefix(prefix)
    return deleted
