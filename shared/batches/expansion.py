"""Expanding batches into jobs, feeding them to the bulk queue, and finishing batches.

- Expansion runs in the worker, `batch_chunk_size` jobs per transaction. The same
  transaction moves the batch's cursor (and its pending estimate to the jobs), and
  (batch_id, batch_index) is unique, so a worker that dies mid-way is resumed by
  another from the cursor: no job twice, none missing. A batch holds a lease while
  it expands; the reaper restarts one whose lease ran out.
- Batch jobs are created queued but not sent. The feeder (beat, every
  `bulk_feed_interval_seconds`, and after the last chunk) sends the oldest of them
  (to the bulk queue: a batch's priority is low unless it says otherwise) while fewer
  than `bulk_max_in_flight` are in flight, so a 100,000-job batch never floods the
  broker nor starves interactive jobs; and a rate-limited provider's bulk jobs at bulk's
  share of its rate, evenly (ProviderLimiter.pace), so their answers come as evenly.
- Tenants take turns for the room under the cap, oldest job first within each.
- A batch's jobs are sent only once it is fully expanded. Expanding takes seconds;
  its first jobs running alongside it made it take three times as long on a small
  machine (bench/README.md, "Bulk"), and the jobs waited for it anyway.
- A batch whose jobs are all terminal is finished once: its manifest (one JSON
  line per job) goes to S3, then the status changes and the `batch.completed`
  webhook is written in one transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import false, func, insert, or_, select, update
from sqlalchemy.orm import Session

from shared import changes
from shared.batches.checks import Children, parents_query, source_page
from shared.batches.records import COMPLETED, EXPANDING, RUNNING, result_lines
from shared.config import Settings
from shared.db import session_scope, utcnow, written
from shared.errors import EditqError
from shared.formats import iso
from shared.jobs.states import CANCELED, QUEUED, TERMINAL, new_job_id
from shared.jobs.states import RUNNING as JOB_RUNNING
from shared.models import Batch, Job, JobEvent, Tenant, WebhookDelivery
from shared.providers.catalog import Catalog
from shared.queue import BULK, INTERACTIVE, LOW, queue_for
from shared.retention import policy, uses
from shared.services import Services
from shared.storage import Storage, batch_key
from shared.webhooks.outbox import PENDING

FEED_LOCK = 0x6564_6974_7166_6564  # PostgreSQL advisory lock: one bulk feeder at a time


def take_expansion(settings: Settings, batch_id: str) -> bool:
    """The right to expand this batch now: one worker at a time, under a lease."""
    now = utcnow()
    lease = timedelta(seconds=settings.batch_expansion_lease_seconds)
    with session_scope(settings.database_url) as session:
        return bool(written(
            session, update(Batch).where(Batch.id == batch_id, Batch.status == EXPANDING,
                                         or_(Batch.lease_expires_at.is_(None),
                                             Batch.lease_expires_at < now))
            .values(lease_expires_at=now + lease)
            .execution_options(synchronize_session=False), Batch.id))


def expand(services: Services, batch_id: str) -> int:
    """Create the batch's remaining jobs, chunk by chunk; answer how many this call made."""
    settings = services.settings
    if not take_expansion(settings, batch_id):
        return 0
    with session_scope(settings.database_url) as session:
        batch = session.scalars(select(Batch).where(Batch.id == batch_id)).one()
        tenant = session.scalars(select(Tenant).where(Tenant.id == batch.tenant_id)).one()
        keep = policy.resolve(settings, {"inputs": tenant.keep_inputs_seconds,
                                         "outputs": tenant.keep_outputs_seconds}, {})
    items = _items(services.storage, batch) if batch.kind == "items" else None
    lease = timedelta(seconds=settings.batch_expansion_lease_seconds)
    made = 0
    while True:
        with session_scope(settings.database_url) as session:
            # Lock the batch first: a cancel then waits for this chunk, and sees its jobs.
            alive = written(
                session, update(Batch).where(Batch.id == batch_id, Batch.status == EXPANDING)
                .values(updated_at=utcnow(), lease_expires_at=utcnow() + lease)
                .execution_options(synchronize_session=False), Batch.id)
            if not alive:
                # Canceled: this worker inserts nothing more, so the batch may finish
                # now rather than when its lease runs out.
                session.execute(update(Batch).where(Batch.id == batch_id,
                                                    Batch.status == CANCELED)
                                .values(lease_expires_at=None)
                                .execution_options(synchronize_session=False))
                return made
            batch = session.scalars(select(Batch).where(Batch.id == batch_id)
                                    .execution_options(populate_existing=True)).one()
            values: dict[str, Any] = {}
            if items is not None:
                chunk = [json.loads(line) for line in
                         items[batch.expanded:batch.expanded + settings.batch_chunk_size]]
                cursor = batch.expanded + len(chunk)
                done = cursor >= len(items)
            elif batch.kind == "source":
                chunk, after, done = _source_chunk(services, batch, settings.batch_chunk_size)
                cursor, values["spec"] = batch.cursor, {**batch.spec, "after": after}
            else:
                chunk, cursor, done, skipped = _reprocess_chunk(
                    session, services.catalog, batch, settings.batch_chunk_size)
                if skipped:  # (said in the manifest: the first 1,000)
                    values["spec"] = {**batch.spec, "skipped": [
                        *batch.spec.get("skipped", []), *skipped][:1000]}
            if chunk:
                _insert_jobs(session, batch, chunk, keep)
                made += len(chunk)
            pending = sum((Decimal(c["estimate"]) for c in chunk), Decimal(0))
            # Done: what was admitted and not made (a bucket source's listing ended before
            # its limit, a parent changed since) is released.
            final = {"status": RUNNING, "expanded_at": utcnow(), "lease_expires_at": None,
                     "total": batch.expanded + len(chunk), "estimate_pending": Decimal(0),
                     "estimated_total": Batch.estimated_total - Batch.estimate_pending + pending}
            values.update({"expanded": Batch.expanded + len(chunk), "cursor": cursor,
                           "estimate_pending": Batch.estimate_pending - pending})
            session.execute(update(Batch).where(Batch.id == batch_id)
                            .values(**{**values, **(final if done else {})})
                            .execution_options(synchronize_session=False))
        if done:
            return made


def _items(storage: Storage, batch: Batch) -> list[str]:
    """The batch's checked items as JSON lines, each parsed only when its chunk comes."""
    raw = storage.get(batch.spec["items_key"]).decode()
    return [line for line in raw.splitlines() if line.strip()]


def _source_chunk(services: Services, batch: Batch,
                  size: int) -> tuple[list[dict[str, Any]], str, bool]:
    """The next children of a bucket source: one per image object listed after the last
    one made (the spec's `after`), up to the limit admitted at acceptance; the key to
    list after next time, and whether the listing (or the limit) is done."""
    spec = batch.spec
    bucket, prefix = spec["source"]["bucket"], spec["source"]["prefix"]
    room = min(size, spec["source"]["limit"] - batch.expanded)
    keys: list[str] = []
    after = spec.get("after", "")
    while len(keys) < room:
        page = source_page(services, bucket, prefix, after, room - len(keys))
        if page is None:
            return _children(spec["template"], bucket, keys), after, True
        keys += page[0]
        after = page[1]
    done = batch.expanded + len(keys) >= spec["source"]["limit"]
    return _children(spec["template"], bucket, keys), after, done


def _children(template: dict[str, Any], bucket: str, keys: list[str]) -> list[dict[str, Any]]:
    return [{**template, "input_keys": [], "mask_key": None,
             "input_refs": {"images": [{"source": {"bucket": bucket, "key": key}}],
                            "mask": None}} for key in keys]


def _reprocess_chunk(session: Session, catalog: Catalog, batch: Batch, size: int
                     ) -> tuple[list[dict[str, Any]], int, bool, list[dict[str, Any]]]:
    """The next children, the cursor after them, whether the expansion is done (the
    parents are exhausted, or there are as many jobs as were admitted at acceptance), and
    the parents skipped since acceptance, each with its reason (their inputs deleted by
    retention meanwhile, say)."""
    spec = batch.spec
    query = parents_query(batch.tenant_id, spec.get("filter") or {}, batch.created_at,
                          exclude_batch=batch.id).where(Job.seq > batch.cursor)
    limit = max(0, min(size, batch.total - batch.expanded))
    parents = session.execute(query.limit(limit)).all()
    children, maker = [], Children(spec.get("override") or {}, catalog)
    skipped: list[dict[str, Any]] = []
    for parent in parents:
        if parent.inputs_deleted_at is not None or not parent.input_keys:
            skipped.append({"parent_job_id": parent.id, "reason": "inputs_deleted"
                            if parent.inputs_deleted_at is not None else "no_stored_inputs"})
            continue
        try:
            children.append(maker.of(parent))
        except EditqError as exc:  # checked at acceptance; a parent changed since
            skipped.append({"parent_job_id": parent.id, "reason": exc.code})
    cursor = parents[-1].seq if parents else batch.cursor
    done = len(parents) < limit or batch.expanded + len(children) >= batch.total
    return children, cursor, done, skipped


def _insert_jobs(session: Session, batch: Batch, chunk: list[dict[str, Any]],
                 keep: dict[str, int]) -> None:
    """The chunk's jobs, their events and the inputs each uses; an item that does not say
    how long its job keeps its images (a reprocessing's child) takes `keep`."""
    now = utcnow()
    deadline_seconds = batch.spec.get("deadline_seconds")
    job_events = [e for e in (batch.webhook_events or []) if e.startswith("job.")]
    rows = [{
        "id": new_job_id(), "tenant_id": batch.tenant_id, "status": QUEUED,
        "operation": c["operation"], "model": c["model"], "provider": c["provider"],
        "prompt": c["prompt"], "negative_prompt": c.get("negative_prompt"),
        "options": c["options"], "metadata_": c.get("metadata") or {},
        "input_keys": c["input_keys"], "mask_key": c.get("mask_key"), "outputs": [],
        "input_refs": c.get("input_refs"), "inputs_upright": c.get("inputs_upright"),
        "attempts": 0, "cost_estimated": Decimal(c["estimate"]),
        "currency": c.get("currency", "USD"),
        "queue": queue_for(batch.spec.get("priority", LOW)), "batch_id": batch.id,
        "batch_index": batch.expanded + n, "parent_job_id": c.get("parent_job_id"),
        # An item's own subscription, else the job events the batch subscribes to (an
        # empty list: none, not the tenant's default for every job of a big batch).
        "webhook_url": c.get("webhook_url") or (batch.webhook_url if job_events else None),
        "webhook_events": (c.get("webhook_events") if c.get("webhook_url") else job_events),
        "deadline_at": _deadline(now, c.get("deadline_seconds") or deadline_seconds),
        "keep_inputs_seconds": c.get("keep_inputs_seconds", keep["inputs"]),
        "keep_outputs_seconds": c.get("keep_outputs_seconds", keep["outputs"]),
        # Not sent yet: the feeder sends it (and sets this) when there is room.
        "lease_expires_at": None, "created_at": now, "updated_at": now,
    } for n, c in enumerate(chunk)]
    session.execute(insert(Job), rows)
    uses.record(session, [(r["id"], batch.tenant_id, key) for r in rows
                          for key in sorted({*r["input_keys"],
                                             *([r["mask_key"]] if r["mask_key"] else [])})])
    session.execute(insert(JobEvent), [
        {"job_id": r["id"], "type": "created", "to_status": QUEUED, "at": now,
         "detail": {"model": r["model"], "provider": r["provider"], "batch_id": batch.id,
                    "estimated": str(r["cost_estimated"])}} for r in rows])


def _one_feeder_at_a_time(session: Session) -> None:
    """Feeders run at once (beat's, and one after each chunk): each must count the jobs in
    flight and mark the ones it sends without another doing the same in between, else
    both fill the same room (over the cap) or send the same jobs twice."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(FEED_LOCK)))
    else:  # SQLite: a write, even of no row, holds the database's write lock until commit
        session.execute(update(Job).where(false()).values(lease_expires_at=None)
                        .execution_options(synchronize_session=False))


def _deadline(now: datetime, seconds: int | None) -> datetime | None:
    return now + timedelta(seconds=seconds) if seconds else None


Send = Callable[[str, str], None]  # (job id, queue)
Pace = Callable[[str, int], int]  # (provider, jobs wanted) -> jobs that may go now


def pace_of(services: Services) -> Pace:
    """Each provider's limiter paces bulk (its share of the rate, evenly); a provider
    without one is not paced."""
    def pace(provider: str, wanted: int) -> int:
        limiter = services.limiter(provider)
        return limiter.pace(wanted) if limiter is not None else wanted
    return pace


def feed(settings: Settings, send: Send, pace: Pace | None = None) -> int:
    """Send waiting batch jobs to their queue while there is room under the cap; a
    low-priority (bulk) job only when its provider's pace allows (`pace`)."""
    now = utcnow()
    sent_now = or_(Job.status == JOB_RUNNING,
                   (Job.status == QUEUED) & Job.lease_expires_at.is_not(None))
    with session_scope(settings.database_url) as session:
        _one_feeder_at_a_time(session)
        running = {batch_id: spec.get("priority", LOW) for batch_id, spec in session.execute(
            select(Batch.id, Batch.spec).where(Batch.status == RUNNING))}
        normal = [batch_id for batch_id, priority in running.items() if priority != LOW]
        # In flight: the bulk queue's jobs, and a normal-priority batch's sent ones. (Each
        # count on an index: the interactive queue may hold thousands of jobs.)
        in_flight = session.scalar(select(func.count()).select_from(Job).where(
            Job.queue == BULK, sent_now)) or 0
        if normal:
            in_flight += session.scalar(select(func.count()).select_from(Job).where(
                Job.batch_id.in_(normal), Job.queue == INTERACTIVE, sent_now)) or 0
        room = settings.bulk_max_in_flight - in_flight
        if room <= 0 or not running:
            return 0
        # Tenants take turns: each tenant's oldest waiting job, then each one's second,
        # and so on. A tenant's 100,000-job batch must not make another's 10 jobs wait
        # for all of it.
        turn = func.row_number().over(partition_by=Job.tenant_id, order_by=Job.seq)
        ranked = (select(Job.id, Job.seq, Job.provider, Job.queue, turn.label("turn"))
                  .where(Job.batch_id.in_(list(running)), Job.status == QUEUED,
                         Job.lease_expires_at.is_(None))
                  .subquery())
        waiting = list(session.execute(select(ranked.c.id, ranked.c.provider, ranked.c.queue)
                                       .order_by(ranked.c.turn, ranked.c.seq).limit(room)))
        chosen = _paced(waiting, pace) if pace is not None else waiting
        queues = {row.id: row.queue for row in chosen}
        if queues:  # (only the jobs marked here are sent: one canceled meanwhile is not)
            marked = list(session.scalars(
                update(Job).where(Job.id.in_(list(queues)), Job.status == QUEUED,
                                  Job.lease_expires_at.is_(None))
                .values(lease_expires_at=now)
                .execution_options(synchronize_session=False).returning(Job.id)))
            queues = {job_id: queues[job_id] for job_id in marked}
    for job_id, queue in queues.items():
        send(job_id, queue)
    return len(queues)


def _paced(waiting: list[Any], pace: Pace) -> list[Any]:
    """The waiting jobs (in turn order) that may go now: bulk ones as far as their
    provider's pace allows; others (a normal-priority batch's) all."""
    wanted: dict[str, int] = {}
    for row in waiting:
        if row.queue == BULK:
            wanted[row.provider] = wanted.get(row.provider, 0) + 1
    allowed = {provider: pace(provider, n) for provider, n in wanted.items()}
    chosen = []
    for row in waiting:
        if row.queue != BULK:
            chosen.append(row)
        elif allowed[row.provider] > 0:
            allowed[row.provider] -= 1
            chosen.append(row)
    return chosen


def finish_batches(settings: Settings, storage: Storage, limit: int = 50) -> list[str]:
    """Finish every batch that is expanded (or canceled) and has no job left to run."""
    now = utcnow()
    with session_scope(settings.database_url) as session:
        # Only batches that can finish now: `limit` unfinishable ones (long batches still
        # running) must not hide the finishable ones behind them.
        unfinished = select(Job.id).where(Job.batch_id == Batch.id,
                                          Job.status.not_in(tuple(TERMINAL)))
        candidates = list(session.scalars(select(Batch.id).where(
            Batch.status.in_((RUNNING, CANCELED)), Batch.finished_at.is_(None),
            ~unfinished.exists(),
            or_(Batch.status != CANCELED, Batch.lease_expires_at.is_(None),
                Batch.lease_expires_at <= now)).order_by(Batch.seq).limit(limit)))
    finished = []
    for batch_id in candidates:
        with session_scope(settings.database_url) as session:
            unfinished = session.scalar(select(func.count()).select_from(Job).where(
                Job.batch_id == batch_id, Job.status.not_in(tuple(TERMINAL))))
            batch = session.scalars(select(Batch).where(Batch.id == batch_id)).one()
            if unfinished or (batch.status == CANCELED and batch.lease_expires_at is not None
                              and batch.lease_expires_at > utcnow()):
                continue
            key = batch_key(batch.tenant_id, batch_id, "manifest.jsonl")
            manifest = "".join(result_lines(session, batch, storage)).encode()
        storage.put(key, manifest, "application/x-ndjson")
        with session_scope(settings.database_url) as session:
            now = utcnow()
            if not written(
                    session, update(Batch).where(Batch.id == batch_id,
                                                 Batch.finished_at.is_(None))
                    .values(status=(COMPLETED if batch.status == RUNNING else CANCELED),
                            finished_at=now, updated_at=now, manifest_key=key)
                    .execution_options(synchronize_session=False), Batch.id):
                continue
            _batch_event(session, batch_id)
            changes.note(session, changes.batch_key(batch_id))
            finished.append(batch_id)
    return finished


def _batch_event(session: Session, batch_id: str) -> None:
    from shared.batches.records import batch_view  # (a view needs storage only for the manifest)

    batch = session.scalars(select(Batch).where(Batch.id == batch_id)
                            .execution_options(populate_existing=True)).one()
    if not batch.webhook_url or "batch.completed" not in (
            batch.webhook_events or ["batch.completed"]):
        return
    data = batch_view(session, batch, None)  # its manifest link is presigned at send
    session.add(WebhookDelivery(
        id="whd_" + uuid.uuid4().hex[:24], msg_id="msg_" + uuid.uuid4().hex,
        tenant_id=batch.tenant_id, batch_id=batch.id, event_type="batch.completed",
        url=batch.webhook_url, payload={"type": "batch.completed",
                                        "timestamp": iso(utcnow()), "data": data},
        status=PENDING, attempts=0, next_attempt_at=utcnow()))
