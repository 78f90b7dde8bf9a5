"""/v1/batches: many jobs at once (items, inline or JSONL), or reprocessing of stored jobs.

Accepting a batch checks every item, stores their images and admits the whole
estimate; the worker creates the jobs afterwards (shared.expansion), so even a
100,000-job batch is answered in the time it takes to check it.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.bodies import edit_request_from_dict, media_type
from api.deps import CeleryDep, CursorQuery, PrincipalDep, SettingsDep, StorageDep
from api.schemas import BatchList, BatchOut
from shared import batches, budgets
from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.errors import InvalidInput, RequestTooLarge, UnsupportedMediaType
from shared.jobs import decode_cursor, encode_cursor
from shared.models import Batch
from shared.queue import enqueue_expansion
from shared.views import money
from shared.webhooks_ssrf import check_webhook_url

router = APIRouter(prefix="/v1/batches", tags=["batches"])


class Reprocess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: dict[str, Any] = Field(default_factory=dict,
                                   description=", ".join(batches.FILTER_FIELDS))
    override: dict[str, Any] = Field(default_factory=dict,
                                     description=", ".join(batches.OVERRIDE_FIELDS))


class BatchCreate(BaseModel):
    """Either `items` (job requests, over `defaults`) or `reprocess`."""

    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    reprocess: Reprocess | None = None
    on_error: Literal["reject", "skip"] = Field(
        "reject", description="reject: any invalid item refuses the batch; skip: the valid "
                              "items are accepted and the others reported")
    dry_run: bool = False
    webhook_url: str | None = Field(None, max_length=2048)
    webhook_events: list[str] | None = Field(
        None, description="batch.completed (default) and any job events for its jobs")
    metadata: dict[str, Any] = Field(default_factory=dict)


def _jsonl(text: str, limit: int) -> tuple[list[tuple[int, dict[str, Any]]],
                                           list[dict[str, Any]]]:
    lines, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append({"line": number, "code": "invalid_json", "message": str(exc)})
            continue
        if not isinstance(item, dict):
            errors.append({"line": number, "code": "invalid_json",
                           "message": "each line must be a JSON object"})
            continue
        lines.append((number, item))
        if len(lines) > limit:
            raise InvalidInput(f"a batch holds at most {limit} items", field="file")
    return lines, errors


def _invalid(exc: ValidationError) -> InvalidInput:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidInput(f"{where}: {first['msg']}", field=where)


async def _read(request: Request, settings: Settings) -> tuple[BatchCreate, str | None]:
    """The batch request, and the JSONL text of an upload when there is one; a malformed
    one is a 422 (invalid_input), never a 500."""
    try:
        return await _parse(request, settings)
    except ValidationError as exc:
        raise _invalid(exc) from exc


async def _parse(request: Request, settings: Settings) -> tuple[BatchCreate, str | None]:
    content_type = media_type(request)
    if content_type not in ("application/json", "multipart/form-data"):
        raise UnsupportedMediaType("send application/json or multipart/form-data",
                                   content_type=content_type[:100])
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the items as a JSONL file in `file`", field="file")
        data = await upload.read(settings.batch_max_upload_bytes + 1)
        if len(data) > settings.batch_max_upload_bytes:
            raise RequestTooLarge(f"the upload is over {settings.batch_max_upload_bytes} bytes")
        fields: dict[str, Any] = {}
        for name in ("defaults", "metadata"):
            if isinstance(value := form.get(name), str) and value:
                try:
                    fields[name] = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{name} must be a JSON object", field=name) from exc
        for name in ("on_error", "webhook_url"):
            if isinstance(value := form.get(name), str) and value:
                fields[name] = value
        if isinstance(events := form.get("webhook_events"), str) and events:
            fields["webhook_events"] = [e.strip() for e in events.split(",") if e.strip()]
        fields["dry_run"] = form.get("dry_run") in ("true", "1")
        return BatchCreate.model_validate(fields), data.decode("utf-8", errors="replace")
    return BatchCreate.model_validate_json(await request.body() or b"{}"), None


def _fingerprint(body: BatchCreate, upload: str | None) -> str:
    """What makes two POSTs the same batch, for Idempotency-Key."""
    canonical = json.dumps(body.model_dump(mode="json", exclude={"dry_run"}), sort_keys=True)
    return hashlib.sha256(f"{canonical}\n{upload or ''}".encode()).hexdigest()


@router.post("", status_code=202)
async def create_batch(request: Request, response: Response, settings: SettingsDep,
                       storage: StorageDep, celery: CeleryDep, principal: PrincipalDep,
                       idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
                       ) -> dict[str, Any]:
    """A retry with the same Idempotency-Key and body answers the batch the first made
    (`Idempotent-Replayed: true`); a dry run creates nothing and ignores the key."""
    body, upload = await _read(request, settings)
    fingerprint = _fingerprint(body, upload) if idempotency_key else None
    if (body.items is not None or upload is not None) == (body.reprocess is not None):
        raise InvalidInput("send items (inline or a JSONL file) or reprocess, one of them",
                           field="items")
    if body.items is not None and len(body.items) > settings.batch_max_items:
        raise InvalidInput(f"at most {settings.batch_max_items} inline items; upload a JSONL "
                           "file for more", field="items")
    def accept() -> tuple[dict[str, Any], str | None, bool]:
        if body.webhook_url:  # (here, in a thread: it may wait for DNS)
            check_webhook_url(body.webhook_url, settings.webhook_allowed_host_set)
        with session_scope(settings.database_url) as session:
            if idempotency_key and fingerprint and not body.dry_run and (
                    earlier := batches.replay(session, principal.tenant_id, idempotency_key,
                                              fingerprint)):
                return batches.batch_view(session, earlier, storage), earlier.id, False
            if body.reprocess is not None:
                kind, spec = "reprocess", body.reprocess.model_dump()
                checked = batches.check_reprocess(session, principal.tenant_id, spec, utcnow())
            else:
                kind, spec = "items", {"defaults_given": bool(body.defaults)}
                lines, errors = (_jsonl(upload, settings.batch_max_jobs) if upload is not None
                                 else (list(enumerate(body.items or [], start=1)), []))
                checked = batches.check_items(
                    lines, body.defaults, settings, storage,
                    partial(edit_request_from_dict, max_bytes=settings.max_image_bytes),
                    store=not body.dry_run)
                checked.errors = sorted(errors + checked.errors, key=lambda e: e["line"])
            if body.dry_run:
                return _dry_run(session, settings, principal.tenant_id, checked), None, False
            batch, created = batches.create(
                session, settings, storage, principal, kind=kind, checked=checked, spec=spec,
                skip_invalid=body.on_error == "skip", webhook_url=body.webhook_url,
                webhook_events=body.webhook_events, metadata=body.metadata,
                idempotency_key=idempotency_key, fingerprint=fingerprint)
            session.commit()
            view = batches.batch_view(session, batch, storage)
            if created:
                view["invalid"] = checked.errors[:1000]
            return view, batch.id, created

    view, batch_id, created = await run_in_threadpool(accept)
    if batch_id is None:
        response.status_code = 200
        return view
    if created:
        await run_in_threadpool(enqueue_expansion, celery, batch_id)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    return view


def _dry_run(session: Any, settings: Settings, tenant_id: str,
             checked: batches.Checked) -> dict[str, Any]:
    by_model = checked.by_model()
    verdict = budgets.evaluate(session, settings, tenant_id, next(iter(by_model), ""),
                               checked.estimate, count=len(checked.items), per_model=by_model)
    return {"count": len(checked.items), "estimated_cost": money(checked.estimate),
            "currency": "USD", "budget_ok": verdict.ok, "budget": verdict.as_dict(),
            "invalid": checked.errors[:1000]}


@router.get("", response_model=BatchList)
def list_batches(settings: SettingsDep, storage: StorageDep, principal: PrincipalDep,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 cursor: CursorQuery = None) -> dict[str, Any]:
    from sqlalchemy import select

    with session_scope(settings.database_url) as session:
        query = select(Batch).where(Batch.tenant_id == principal.tenant_id)
        if cursor:
            query = query.where(Batch.seq < decode_cursor(cursor))
        rows = list(session.scalars(query.order_by(Batch.seq.desc()).limit(limit + 1)))
        page = rows[:limit]
        return {"data": [batches.batch_view(session, b, storage) for b in page],
                "next_cursor": encode_cursor(page[-1].seq) if len(rows) > limit else None}


@router.get("/{batch_id}", response_model=BatchOut)
def get_batch(batch_id: str, settings: SettingsDep, storage: StorageDep,
              principal: PrincipalDep) -> dict[str, Any]:
    with session_scope(settings.database_url) as session:
        batch = batches.get_batch(session, principal.tenant_id, batch_id)
        return batches.batch_view(session, batch, storage)


@router.post("/{batch_id}/cancel", response_model=BatchOut)
def cancel_batch(batch_id: str, settings: SettingsDep, storage: StorageDep,
                 principal: PrincipalDep) -> dict[str, Any]:
    """Cancels its queued jobs and stops its expansion; running jobs finish."""
    with session_scope(settings.database_url) as session:
        batch = batches.cancel(session, principal.tenant_id, batch_id)
        session.commit()
        return batches.batch_view(session, batch, storage)


@router.get("/{batch_id}/results")
def batch_results(batch_id: str, settings: SettingsDep, storage: StorageDep,
                  principal: PrincipalDep) -> StreamingResponse:
    """JSONL, one line per job in batch order: id, parent_job_id, status, output URLs,
    cost and error. Streamed: a 100,000-job batch is never held in memory whole."""
    with session_scope(settings.database_url) as session:
        batches.get_batch(session, principal.tenant_id, batch_id)  # 404 before streaming

    def lines() -> Any:
        with session_scope(settings.database_url) as session:
            batch = batches.get_batch(session, principal.tenant_id, batch_id)
            yield from batches.result_lines(session, batch, storage)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
