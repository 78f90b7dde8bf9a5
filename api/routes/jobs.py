"""/v1/jobs: submit, read (with long-poll), list, cancel, timeline.

Each handler opens its database session inside the thread that uses it and
closes it there: a request never holds a pooled connection while waiting for
a thread, which under a burst deadlocks the two pools against each other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import CeleryDep, PrincipalDep, SettingsDep, StorageDep
from api.schemas import EventList, JobCreate, JobList, JobOut, Status
from shared import jobs
from shared.config import MiB, Settings
from shared.db import session_scope
from shared.errors import InvalidInput, RequestTooLarge, UnsupportedMediaType
from shared.images import decode_base64_image
from shared.queue import enqueue_run
from shared.submission import EditRequest, submit_job
from shared.views import event_view, job_view

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobCreate.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "mask": {"type": "string", "format": "binary"},
                    "prompt": {"type": "string"}, "negative_prompt": {"type": "string"},
                    "operation": {"type": "string"}, "model": {"type": "string"},
                    "options": {"type": "string", "description": "JSON object"},
                    "metadata": {"type": "string", "description": "JSON object"},
                },
            }},
        },
    }
}


def _from_json(raw: bytes, max_bytes: int) -> EditRequest:
    try:
        body = JobCreate.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}", field=where) from exc
    encoded = ([body.image] if body.image else []) + list(body.images or [])
    images = [decode_base64_image(v, field="image" if len(encoded) == 1 else f"images[{n}]",
                                  max_bytes=max_bytes) for n, v in enumerate(encoded)]
    mask = decode_base64_image(body.mask, field="mask", max_bytes=max_bytes) if body.mask else None
    return EditRequest(images=images, mask=mask, prompt=body.prompt,
                       negative_prompt=body.negative_prompt, operation=body.operation,
                       model=body.model, options=body.options, metadata=body.metadata)


def _body_limit(settings: Settings) -> int:
    """Room for every image as base64 (4/3 of its bytes), a mask, and 1 MiB of the rest."""
    return (settings.max_image_bytes * 4 // 3 + 4) * (settings.max_images_per_job + 1) + MiB


async def _read_capped(request: Request, settings: Settings) -> bytes:
    limit = _body_limit(settings)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the request body is over {limit} bytes", limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_field(form: Any, name: str) -> dict[str, Any]:
    raw = form.get(name)
    if raw in (None, ""):
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{name} must be a JSON object", field=name) from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object", field=name)
    return value


async def _from_multipart(request: Request, max_bytes: int) -> EditRequest:
    form = await request.form()
    files = [f for key in ("image", "images") for f in form.getlist(key)]
    images = []
    for item in files:
        if not isinstance(item, UploadFile):
            raise InvalidInput("image fields must be file uploads", field="image")
        images.append(await item.read(max_bytes + 1))
    mask_file = form.get("mask")
    mask = await mask_file.read(max_bytes + 1) if isinstance(mask_file, UploadFile) else None

    def text(name: str) -> str | None:
        value = form.get(name)
        return value if isinstance(value, str) and value != "" else None

    return EditRequest(images=images, mask=mask, prompt=text("prompt"),
                       negative_prompt=text("negative_prompt"),
                       operation=text("operation") or "general_edit", model=text("model"),
                       options=_json_field(form, "options"), metadata=_json_field(form, "metadata"))


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_REQUEST_BODY)
async def create_job(request: Request, response: Response, settings: SettingsDep,
                     storage: StorageDep, celery: CeleryDep,
                     principal: PrincipalDep,
                     idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
                     ) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "application/json")
    if content_type.startswith("multipart/form-data"):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > _body_limit(settings):
            raise RequestTooLarge(f"the request body is over {_body_limit(settings)} bytes")
        req = await _from_multipart(request, settings.max_image_bytes)
    elif content_type.startswith("application/json"):
        req = _from_json(await _read_capped(request, settings), settings.max_image_bytes)
    else:
        raise UnsupportedMediaType("send application/json or multipart/form-data",
                                   content_type=content_type)

    def submit() -> tuple[dict[str, Any], bool]:
        # A session of its own, in this thread: none is held while waiting for one.
        with session_scope(settings.database_url) as session:
            job, created = submit_job(session, storage, settings, principal, req,
                                      idempotency_key)
            session.commit()
            return job_view(job, storage), created

    view, created = await run_in_threadpool(submit)
    if created:
        await run_in_threadpool(_enqueue, celery, settings, view["id"])
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{view['id']}"
    return view


def _enqueue(celery: Any, settings: Settings, job_id: str) -> None:
    """The job row is committed; if the broker is down the job stays queued for the reaper."""
    try:
        enqueue_run(celery, job_id)
    except Exception as exc:
        log.error("job %s: enqueue failed: %s", job_id, type(exc).__name__)
        with session_scope(settings.database_url) as session:
            jobs.add_event(session, job_id, "enqueue_failed", error=type(exc).__name__)


@router.get("", response_model=JobList)
def list_jobs(settings: SettingsDep, storage: StorageDep, principal: PrincipalDep,
              status: Status | None = None, model: str | None = None,
              created_after: datetime | None = None, created_before: datetime | None = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50,
              cursor: str | None = None) -> dict[str, Any]:
    filters = jobs.JobFilter(status=status, model=model, created_after=created_after,
                             created_before=created_before)
    with session_scope(settings.database_url) as session:
        rows, next_cursor = jobs.list_jobs(session, principal.tenant_id, filters, limit=limit,
                                           cursor=cursor)
    return {"data": [job_view(j, storage) for j in rows], "next_cursor": next_cursor}


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, settings: SettingsDep, storage: StorageDep,
                  principal: PrincipalDep,
                  wait: Annotated[int, Query(ge=0, le=300,
                                             description="seconds to long-poll")] = 0,
                  ) -> dict[str, Any]:
    if wait > settings.max_wait_seconds:
        raise InvalidInput(f"wait is at most {settings.max_wait_seconds} seconds", field="wait")

    def read() -> dict[str, Any]:
        with session_scope(settings.database_url) as session:
            return job_view(jobs.get_job(session, principal.tenant_id, job_id), storage)

    deadline = time.monotonic() + wait
    pause = 0.05
    view = await run_in_threadpool(read)
    while view["status"] not in jobs.TERMINAL and time.monotonic() < deadline:
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.5)
        view = await run_in_threadpool(read)
    return view


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, settings: SettingsDep, storage: StorageDep,
               principal: PrincipalDep) -> dict[str, Any]:
    with session_scope(settings.database_url) as session:
        job = jobs.cancel(session, principal.tenant_id, job_id)
    return job_view(job, storage)


@router.get("/{job_id}/events", response_model=EventList)
def job_events(job_id: str, settings: SettingsDep, principal: PrincipalDep) -> dict[str, Any]:
    with session_scope(settings.database_url) as session:
        events = jobs.list_events(session, principal.tenant_id, job_id)
        return {"data": [event_view(e) for e in events]}
