"""/v1/batches: many jobs at once (items, inline or JSONL), or reprocessing of stored jobs.

Accepting a batch checks every item, stores their images and admits the whole
estimate; the worker creates the jobs afterwards (shared.batches.expansion), so even a
100,000-job batch is answered in the time it takes to check it.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.bodies import edit_request_from_dict, invalid_of, media_type
from api.deps import (
    CeleryDep,
    CursorQuery,
    IdempotencyKeyDep,
    PrincipalDep,
    ServicesDep,
    SettingsDep,
    StorageDep,
    WorkDep,
)
from api.schemas import BatchList, BatchOut, DataErased
from shared import user_json
from shared.batches import intake, records
from shared.batches.intake import BatchCreate
from shared.config import Settings
from shared.db import session_scope
from shared.errors import InvalidInput, RequestTooLarge, UnsupportedMediaType
from shared.queue import enqueue_expansion
from shared.retention import erase

router = APIRouter(prefix="/v1/batches", tags=["batches"])


async def _read(request: Request, settings: Settings) -> tuple[BatchCreate, BinaryIO | None]:
    """The batch request, and the JSONL file of an upload when there is one (read line by
    line later, in the domain); a malformed one is a 422, never a 500."""
    try:
        return await _parse(request, settings)
    except ValidationError as exc:
        raise invalid_of(exc) from exc


def json_body_values(settings: Settings) -> int:
    """The JSON values a batch's JSON body may hold: its inline items at a few hundred
    each (bigger items travel as a JSONL upload, each line bounded as a job's body)."""
    return max(user_json.MAX_REQUEST_VALUES, settings.batch_max_items * 256)


async def _parse(request: Request, settings: Settings) -> tuple[BatchCreate, BinaryIO | None]:
    content_type = media_type(request)
    if content_type not in ("application/json", "multipart/form-data"):
        raise UnsupportedMediaType("send application/json or multipart/form-data",
                                   content_type=content_type[:100])
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the items as a JSONL file in `file`", field="file")
        if upload.size is not None and upload.size > settings.batch_max_upload_bytes:
            raise RequestTooLarge(f"the upload is over {settings.batch_max_upload_bytes} bytes")
        fields: dict[str, Any] = {}
        for name in ("defaults", "metadata"):
            if isinstance(value := form.get(name), str) and value:
                fields[name] = user_json.loads(value, field=name)
        for name in ("on_error", "webhook_url", "priority"):
            if isinstance(value := form.get(name), str) and value:
                fields[name] = value
        if isinstance(events := form.get("webhook_events"), str) and events:
            fields["webhook_events"] = [e.strip() for e in events.split(",") if e.strip()]
        fields["dry_run"] = form.get("dry_run") in ("true", "1")
        return BatchCreate.model_validate(fields), upload.file
    data = user_json.loads(await request.body() or b"{}", field="body",
                           max_values=json_body_values(settings))
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return BatchCreate.model_validate(data), None


@router.post("", status_code=202)
async def create_batch(request: Request, response: Response, services: ServicesDep,
                       celery: CeleryDep, principal: PrincipalDep,
                       idempotency_key: IdempotencyKeyDep,
                       ) -> dict[str, Any]:
    """A retry with the same Idempotency-Key and body answers the batch the first made
    (`Idempotent-Replayed: true`); a dry run creates nothing and ignores the key."""
    body, upload = await _read(request, services.settings)
    decode = partial(edit_request_from_dict, settings=services.settings)
    accepted = await run_in_threadpool(intake.accept, services, principal, body,
                                       upload, decode, idempotency_key)
    if accepted.batch_id is None:
        response.status_code = 200
        return accepted.view
    if accepted.created:
        await run_in_threadpool(enqueue_expansion, celery, accepted.batch_id)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/batches/{accepted.batch_id}"
    return accepted.view


@router.get("", response_model=BatchList)
def list_batches(work: WorkDep, storage: StorageDep, principal: PrincipalDep,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 cursor: CursorQuery = None) -> dict[str, Any]:
    return work.now(lambda session: intake.list_page(
        session, storage, principal.tenant_id, limit, cursor))


@router.get("/{batch_id}", response_model=BatchOut)
def get_batch(batch_id: str, work: WorkDep, storage: StorageDep,
              principal: PrincipalDep) -> dict[str, Any]:
    return work.now(lambda session: records.batch_view(
        session, records.get_batch(session, principal.tenant_id, batch_id), storage))


@router.post("/{batch_id}/cancel", response_model=BatchOut)
def cancel_batch(batch_id: str, work: WorkDep, storage: StorageDep,
                 principal: PrincipalDep) -> dict[str, Any]:
    """Cancels its queued jobs and stops its expansion; running jobs finish."""

    def cancel(session: Session) -> dict[str, Any]:
        batch = records.cancel(session, principal.tenant_id, batch_id)
        session.commit()
        return records.batch_view(session, batch, storage)

    return work.now(cancel)


@router.get("/{batch_id}/results")
def batch_results(batch_id: str, settings: SettingsDep, work: WorkDep, storage: StorageDep,
                  principal: PrincipalDep) -> StreamingResponse:
    """JSONL, one line per job in batch order: id, parent_job_id, status, output URLs,
    cost and error. Streamed: a 100,000-job batch is never held in memory whole."""
    work.now(lambda session: records.get_batch(session, principal.tenant_id, batch_id))

    def lines() -> Any:
        with session_scope(settings.database_url) as session:
            batch = records.get_batch(session, principal.tenant_id, batch_id)
            yield from records.result_lines(session, batch, storage)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.delete("/{batch_id}/data", response_model=DataErased)
def delete_batch_data(batch_id: str, work: WorkDep, services: ServicesDep,
                      principal: PrincipalDep) -> dict[str, Any]:
    """Delete a finished batch's stored images (every job's) and its files (items,
    manifest). Its records, events and costs stay."""
    return work.now(lambda session: erase.erase_batch(
        session, services.settings, services.storage, principal.tenant_id, batch_id))
