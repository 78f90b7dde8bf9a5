"""Accepting a batch request: the one call POST /v1/batches makes (as POST /v1/jobs
calls `submission.submit_job`), and the listing of a tenant's batches.

The route reads the HTTP body (JSON, or a multipart JSONL upload) into a
`BatchCreate`; everything after that, from the Idempotency-Key to the dry run,
is here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import user_json
from shared.address_guard import check_webhook_url
from shared.batches import checks, records
from shared.batches.checks import PRIORITY_IS_THE_BATCHS
from shared.db import newest_first, session_scope, utcnow
from shared.errors import EditqError, InvalidInput, InvalidJson
from shared.formats import money
from shared.idempotency import checked_key, replay
from shared.jobs.submission import EditRequest
from shared.models import Batch
from shared.money import budgets
from shared.queue import LOW
from shared.services import Services
from shared.storage import Storage
from shared.tenants import Principal


class Reprocess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: dict[str, Any] = Field(default_factory=dict,
                                   description=", ".join(checks.FILTER_FIELDS))
    override: dict[str, Any] = Field(default_factory=dict,
                                     description=", ".join(checks.OVERRIDE_FIELDS))


class Source(BaseModel):
    """A bucket the operator allows (EDITQ_SOURCE_BUCKETS): one job per image object
    under `prefix`, at most `limit`, each made from `defaults`."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(max_length=255)
    prefix: str = Field("", max_length=1024)
    limit: int = Field(ge=1, description="the most jobs it makes (admitted at acceptance; "
                                         "what the listing does not fill is released)")


class BatchCreate(BaseModel):
    """One of `items` (job requests, over `defaults`), `reprocess` or `source`."""

    model_config = ConfigDict(extra="forbid")

    items: list[dict[str, Any]] | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    reprocess: Reprocess | None = None
    source: Source | None = None
    on_error: Literal["reject", "skip"] = Field(
        "reject", description="reject: any invalid item refuses the batch; skip: the valid "
                              "items are accepted and the others reported")
    dry_run: bool = False
    webhook_url: str | None = Field(None, max_length=2048)
    webhook_events: list[str] | None = Field(
        None, description="batch.completed (default) and any job events for its jobs")
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["normal", "low"] = Field(
        "low", description="low (the default): bulk work, within bulk's share of each "
                           "provider's limits, yielding to interactive jobs; normal: its jobs "
                           "run as interactive ones (still fed at most EDITQ_BULK_MAX_IN_FLIGHT "
                           "at a time)")


@dataclass(frozen=True)
class Accepted:
    """What POST /v1/batches answers: the batch (or a dry run's estimate, `batch_id`
    None), and whether this request created it (False: an Idempotency-Key replay)."""

    view: dict[str, Any]
    batch_id: str | None
    created: bool


def read_jsonl(upload: BinaryIO) -> Iterator[tuple[int, dict[str, Any] | EditqError]]:
    """The upload's items by line number, read one line at a time (a line that is not a
    JSON object comes as its error); blank lines are skipped. Each line is bounded as an
    edit request's body is (shared.user_json)."""
    upload.seek(0)
    for number, raw in enumerate(upload, start=1):
        if not raw.strip():
            continue
        try:
            item = user_json.loads(raw, field=f"line {number}")
        except EditqError as exc:
            yield number, exc
            continue
        if not isinstance(item, dict):
            yield number, InvalidJson("each line must be a JSON object", field=f"line {number}")
            continue
        yield number, item


def fingerprint(body: BatchCreate, upload: BinaryIO | None) -> str:
    """What makes two POSTs the same batch, for Idempotency-Key."""
    # (the default priority left out: keys stored before priorities still match)
    leave_out = {"dry_run"} | ({"priority"} if body.priority == LOW else set())
    canonical = json.dumps(body.model_dump(mode="json", exclude=leave_out), sort_keys=True)
    digest = hashlib.sha256(f"{canonical}\n".encode())
    if upload is not None:
        upload.seek(0)
        while block := upload.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def accept(services: Services, principal: Principal, body: BatchCreate, upload: BinaryIO | None,
           decode: Callable[[dict[str, Any]], EditRequest],
           idempotency_key: str | None = None) -> Accepted:
    """Check the batch, store its items' images, admit its estimate and record it (the
    caller then enqueues the expansion of a batch it created). Blocking: run it in a
    thread (it may wait for DNS, S3 and the database)."""
    settings = services.settings
    given = (body.items is not None or upload is not None, body.reprocess is not None,
             body.source is not None)
    if sum(given) != 1:
        raise InvalidInput("send items (inline or a JSONL file), reprocess or source: one "
                           "of them", field="items")
    if body.items is not None and len(body.items) > settings.batch_max_items:
        raise InvalidInput(f"at most {settings.batch_max_items} inline items; upload a JSONL "
                           "file for more", field="items")
    for name in ("defaults", "metadata"):
        user_json.check(getattr(body, name), field=name)
    if "priority" in body.defaults:
        raise InvalidInput(PRIORITY_IS_THE_BATCHS, field="defaults.priority")
    if body.reprocess is not None:
        user_json.check(body.reprocess.filter, field="reprocess.filter")
        user_json.check(body.reprocess.override, field="reprocess.override")
    if body.webhook_url:
        check_webhook_url(body.webhook_url, settings.webhook_allowed_host_set)
    key = None if body.dry_run else checked_key(idempotency_key)  # a dry run creates nothing
    request_hash = fingerprint(body, upload) if key else None
    with session_scope(settings.database_url) as session:
        if key and request_hash and (earlier := replay(session, Batch, principal.tenant_id, key,
                                                 request_hash, what="batch")):
            return Accepted(records.batch_view(session, earlier, services.storage),
                            earlier.id, False)
        if body.reprocess is not None:
            kind, spec = "reprocess", body.reprocess.model_dump()
            checked = checks.check_reprocess(session, services.catalog, principal.tenant_id,
                                              spec, utcnow())
        elif body.source is not None:
            kind = "source"
            checked, spec = checks.check_source(services, principal, body.source.model_dump(),
                                                body.defaults, decode, count=body.dry_run)
        else:
            kind, spec = "items", {"defaults_given": bool(body.defaults)}
            lines: Iterable[tuple[int, dict[str, Any] | EditqError]] = (
                read_jsonl(upload) if upload is not None
                else enumerate(body.items or [], start=1))
            checked = checks.check_items(lines, body.defaults, services, decode, principal,
                                          store=not body.dry_run, limit=settings.batch_max_jobs)
        if body.dry_run:
            return Accepted(_dry_run(session, services, principal.tenant_id, checked),
                            None, False)
        batch, created = records.create(
            session, services, principal, kind=kind, checked=checked,
            spec={**spec, "priority": body.priority},
            skip_invalid=body.on_error == "skip", webhook_url=body.webhook_url,
            webhook_events=body.webhook_events, metadata=body.metadata,
            idempotency_key=key, fingerprint=request_hash)
        session.commit()
        view = records.batch_view(session, batch, services.storage)
        if created:
            view["invalid"], view["invalid_count"] = checked.errors, checked.invalid
        return Accepted(view, batch.id, created)


def _dry_run(session: Session, services: Services, tenant_id: str,
             checked: checks.Checked) -> dict[str, Any]:
    by_model = checked.by_model
    verdict = budgets.evaluate(session, services.settings, tenant_id, next(iter(by_model), ""),
                               checked.estimate, count=checked.count, per_model=by_model)
    return {"count": checked.count, "estimated_cost": money(checked.estimate),
            "currency": "USD", "budget_ok": verdict.ok, "budget": verdict.as_dict(),
            "invalid": checked.errors, "invalid_count": checked.invalid}


def list_page(session: Session, storage: Storage, tenant_id: str, limit: int,
              cursor: str | None) -> dict[str, Any]:
    """One page of the tenant's batches, newest first."""
    page, next_cursor = newest_first(session, select(Batch).where(Batch.tenant_id == tenant_id),
                                     Batch.seq, limit=limit, cursor=cursor)
    return {"data": [records.batch_view(session, b, storage) for b in page],
            "next_cursor": next_cursor}
