"""The public shape of a job: what GET /v1/jobs/{id} shows and what a webhook sends.

A basic module rather than part of shared.jobs: the webhook outbox (below jobs, which
writes to it) pictures each job in its rows, and delivery presigns their outputs; the
jobs' own views (shared.jobs.views) build on the same two functions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.db import utcnow
from shared.formats import iso, money
from shared.models import Job
from shared.queue import priority_of
from shared.storage import Storage


def job_snapshot(job: Job) -> dict[str, Any]:
    """The job as GET shows it, with each output's storage `key` in place of its URL:
    what a webhook keeps in its outbox row, presigned afresh at each attempt."""
    return {
        "id": job.id,
        "status": job.status,
        "operation": job.operation,
        "model": job.model,
        "provider": job.provider,
        "prompt": job.prompt,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "attempts": job.attempts,
        "outputs": [
            {
                "key": out["key"] if job.outputs_deleted_at is None else None,
                "content_type": out["content_type"],
                "width": out["width"],
                "height": out["height"],
                "bytes": out["bytes"],
                "content_filtered": bool(out.get("content_filtered", False)),
            }
            for out in job.outputs
        ],
        "cost": {
            "estimated": money(job.cost_estimated),
            "actual": money(job.cost_actual) if job.cost_actual is not None else None,
            "currency": job.currency,
        },
        "error": ({"code": job.error_code, "message": job.error_message}
                  if job.error_code else None),
        "options": job.options,
        "metadata": job.metadata_,
        "deadline_at": iso(job.deadline_at),
        "fallback_from": job.fallback_from,
        "webhook_url": job.webhook_url,
        "webhook_events": job.webhook_events,
        "priority": priority_of(job.queue),
        "batch_id": job.batch_id,
        "comparison_id": job.comparison_id,
        "retention": _retention(job),
        # (computed by GET /v1/jobs/{id} and its stream only: a list or a webhook says null)
        "queue_position": None,
        "inputs_deleted_at": iso(job.inputs_deleted_at),
        "outputs_deleted_at": iso(job.outputs_deleted_at),
        "data_deleted_at": iso(job.data_deleted_at),
    }


def _retention(job: Job) -> dict[str, Any] | None:
    """How long its images are kept, and until when (a job from before retention: null)."""
    if job.keep_inputs_seconds is None or job.keep_outputs_seconds is None:
        return None

    def days(seconds: int) -> float | None:
        return None if seconds < 0 else round(seconds / 86_400, 6)

    def until(seconds: int) -> str | None:
        if seconds < 0 or job.finished_at is None:
            return None
        return iso(job.finished_at + timedelta(seconds=seconds))

    return {"inputs_days": days(job.keep_inputs_seconds),
            "outputs_days": days(job.keep_outputs_seconds),
            "inputs_until": until(job.keep_inputs_seconds),
            "outputs_until": until(job.keep_outputs_seconds)}


def presign_outputs(snapshot: dict[str, Any], storage: Storage) -> dict[str, Any]:
    """Output URLs, each living no longer than the output is kept (EDITQ_PRESIGN_EXPIRY_
    SECONDS, capped by its retention); none for a deleted output."""
    expires_in = storage.presign_expiry
    until = (snapshot.get("retention") or {}).get("outputs_until")
    if until:
        left = (datetime.fromisoformat(until.replace("Z", "+00:00")) - utcnow()).total_seconds()
        expires_in = max(1, min(expires_in, int(left)))
    outputs = [{"url": storage.presigned_get_url(out["key"], expires_in) if out["key"] else None,
                **{k: v for k, v in out.items() if k != "key"}}
               for out in snapshot["outputs"]]
    return {**snapshot, "outputs": outputs}
