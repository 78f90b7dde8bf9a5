"""The worker's step that turns a job's input references into stored inputs, before the
job's first call to its provider.

Each reference is fetched (a URL through the address guard, an upload or a source
bucket's object from storage, capped at EDITQ_MAX_IMAGE_BYTES), checked as an inline
image is checked at submit (structure, format, size, then the model's own limits),
stored under its content's hash like any input, and recorded on the job. Whatever
goes wrong is the input's fault and fails the job at once, uncharged (nothing has
reached the provider): `input_refused`, `input_unreachable`, `invalid_image` or the
model's own code, naming the field and a URL's host only, never its query.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from shared.db import session_scope, utcnow
from shared.errors import InputRefused, InputUnreachable, StorageObjectMissing
from shared.fetching import FetchFailed, FetchRefused, fetch
from shared.images import ImageInfo, inspect_image, upright
from shared.inputs import uploads
from shared.inputs.refs import InputRef, host_allowed
from shared.models import Job, Upload
from shared.providers.catalog import ModelSpec
from shared.retention import uses
from shared.services import Services
from shared.storage import input_key

# What an image URL may serve: an image type, or a type that says nothing.
_IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


def resolve(services: Services, job: Job, spec: ModelSpec) -> tuple[list[bytes], bytes | None]:
    """Fetch, check and store the job's referenced inputs; record their keys on the job
    (and on `job`); answer the inputs turned upright, as `_load_inputs` would."""
    refs: dict[str, Any] = job.input_refs or {}
    given = list(refs.get("images") or [])
    fields = ["image"] if len(given) == 1 else [f"images[{n}]" for n in range(len(given))]
    images = [_fetched(services, job, ref, field) for ref, field in zip(given, fields,
                                                                           strict=True)]
    mask = _fetched(services, job, refs["mask"], "mask") if refs.get("mask") else None
    spec.check_images(images, mask)
    storage = services.storage
    keys = []
    for info in [*images, *([mask] if mask is not None else [])]:
        keys.append(input_key(job.tenant_id, info.sha256))
        storage.put_if_absent(keys[-1], info.data, info.content_type)
    mask_key = keys.pop() if mask is not None else None
    upright_all = all(i.orientation == 1 for i in [*images, *([mask] if mask else [])])
    with session_scope(services.settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job.id)
                        .values(input_keys=keys, mask_key=mask_key, inputs_upright=upright_all)
                        .execution_options(synchronize_session=False))
        uses.record(session, [(job.id, job.tenant_id, key)
                              for key in sorted({*keys, *([mask_key] if mask_key else [])})])
        used = [r["upload"] for r in [*given, refs.get("mask") or {}] if "upload" in r]
        if used:
            session.execute(update(Upload).where(Upload.id.in_(used), Upload.used_at.is_(None))
                            .values(used_at=utcnow()).execution_options(
                                synchronize_session=False))
    job.input_keys, job.mask_key, job.inputs_upright = keys, mask_key, upright_all
    return ([upright(i.data) for i in images],
            upright(mask.data) if mask is not None else None)


def _fetched(services: Services, job: Job, ref: dict[str, Any], field: str) -> ImageInfo:
    settings = services.settings
    if "key" in ref:  # an inline input, stored at submit
        data = services.storage.get(ref["key"])
    else:
        data = _bytes_of(services, job, InputRef.of_json(ref), field)
    return inspect_image(data, field=field, max_bytes=settings.max_image_bytes,
                         max_pixels=settings.max_image_pixels)


def _bytes_of(services: Services, job: Job, ref: InputRef, field: str) -> bytes:
    settings = services.settings
    limit = settings.max_image_bytes
    if ref.kind == "url":
        allowed = settings.input_allowed_host_set
        try:
            fetched = fetch(services.fetcher, ref.value, max_bytes=limit, https_only=True,
                            trusted=lambda host, port: host_allowed(host, port, allowed))
        except FetchRefused as exc:
            raise InputRefused(f"{field} refused: {exc.message}", field=field) from exc
        except FetchFailed as exc:
            raise InputUnreachable(f"{field} could not be fetched: {exc.message}",
                                   field=field, status=exc.status) from exc
        kind = fetched.content_type.split(";", 1)[0].strip().lower()
        if kind and not kind.startswith(_IMAGE_TYPES):
            raise InputRefused(f"{field} refused: {ref.shown()} serves {kind[:60]}, "
                               "not an image", field=field)
        return fetched.data
    if ref.kind == "upload":
        with session_scope(settings.database_url) as session:
            upload = uploads.usable(session, job.tenant_id, ref.value, field=field)
            key = upload.key
        try:
            return services.storage.get_capped(key, limit)
        except StorageObjectMissing as exc:
            raise InputRefused(f"{field}: nothing was uploaded to {ref.value}",
                               field=field) from exc
    bucket, _, key = ref.value.partition("/")
    if bucket not in settings.source_buckets:
        raise InputRefused(f"{field}: bucket {bucket!r} is not a source", field=field)
    try:
        return services.source(bucket).get_capped(key, limit)
    except StorageObjectMissing as exc:
        raise InputUnreachable(f"{field}: no object {ref.shown()}", field=field) from exc
