"""Comparisons: one input run on 2 to 6 models at once, shown side by side, with a vote.

A comparison is a thin record over ordinary jobs: each model's run is a queued
job that runs like any other (retries, charges, webhooks), so
nothing here knows how a job runs. What a comparison adds is the checks of
every model before anything is stored, one budget admission for the total,
the shared input, and the vote that feeds the tenant's pick in
`shared.selection.recommendations`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import newest_first, utcnow
from shared.errors import (
    Conflict,
    EditqError,
    InvalidInput,
    ModelsRefused,
    NotFound,
)
from shared.formats import iso, money
from shared.idempotency import checked_key, replay
from shared.jobs.states import SUCCEEDED, TERMINAL
from shared.jobs.submission import (
    Checked,
    EditRequest,
    add_created_event,
    check_for_model,
    check_sizes,
    check_uploads,
    new_job,
    store_inputs,
)
from shared.models import Comparison, Job
from shared.money import budgets
from shared.retention import uses
from shared.services import Services
from shared.storage import Storage
from shared.tenants import Principal

MIN_MODELS, MAX_MODELS = 2, 6


def new_comparison_id() -> str:
    return "cmp_" + secrets.token_hex(12)


def _fingerprint(req: EditRequest, models: list[str]) -> str:
    return hashlib.sha256(f"{req.fingerprint()}|{json.dumps(models)}".encode()).hexdigest()


def _check_models(models: list[str]) -> None:
    if not MIN_MODELS <= len(models) <= MAX_MODELS:
        raise InvalidInput(f"compare {MIN_MODELS} to {MAX_MODELS} models, got {len(models)}",
                           field="models")
    if any(not m.strip() for m in models):
        # A blank id would resolve to the operation's default model.
        raise InvalidInput("every model must be named by its id", field="models")
    if len(set(models)) != len(models):
        raise InvalidInput("each model may be named once", field="models")


def _common_operation(services: Services, models: list[str]) -> str:
    """Without an operation: the one every model serves, when they all serve only it (two
    inpainting models), else general_edit."""
    try:
        served = {tuple(services.catalog.get(m).operations) for m in models}
    except EditqError:
        return "general_edit"  # (an unknown model is refused by name below)
    only = served.pop() if len(served) == 1 else ()
    return only[0] if len(only) == 1 else "general_edit"


def check_all(req: EditRequest, services: Services, models: list[str]) -> list[Checked]:
    """Every model's checks, on images inspected once; refuse with every model's reason."""
    _check_models(models)
    req.operation = req.operation or _common_operation(services, models)
    images, mask = check_sizes(req, services.settings)
    checked: list[Checked] = []
    refusals: list[dict[str, Any]] = []
    for model in models:
        try:
            checked.append(check_for_model(req, services, model, images, mask))
        except EditqError as exc:
            refusals.append({"model": model, "code": exc.code, "status": exc.status,
                             "detail": exc.message})
    if refusals:
        names = ", ".join(r["model"] for r in refusals)
        raise ModelsRefused(f"{len(refusals)} of {len(models)} models cannot take this "
                            f"request: {names}", field="models", refusals=refusals)
    served = [c.spec.id for c in checked]
    if len(set(served)) != len(served):  # (aliases would land on one model twice)
        raise InvalidInput("each model may be named once", field="models")
    return checked


def create(session: Session, services: Services, principal: Principal,
           req: EditRequest, models: list[str],
           idempotency_key: str | None = None) -> tuple[Comparison, list[Job], bool]:
    """Check every model, store the input once, admit the total, insert one job per model.

    Answers (comparison, its jobs, created). The caller commits, then enqueues
    the jobs (as for a single job: no message for a row that does not exist)."""
    idempotency_key = checked_key(idempotency_key)
    fingerprint = _fingerprint(req, models)
    if idempotency_key and (found := replay(session, Comparison, principal.tenant_id,
                                            idempotency_key, fingerprint, what="comparison")):
        return found, jobs_of(session, found), False
    checked = check_all(req, services, models)
    check_uploads(session, principal.tenant_id, req)
    stored = store_inputs(services.storage, principal.tenant_id, checked[0])
    per_model = {c.spec.id: c.price.amount for c in checked}
    total = sum((c.price.amount for c in checked), Decimal(0))
    budgets.admit(session, services.settings, principal.tenant_id, checked[0].spec.id, total,
                  count=len(checked), per_model=per_model)
    comparison = Comparison(
        id=new_comparison_id(), tenant_id=principal.tenant_id, operation=req.operation,
        prompt=req.prompt, models=[c.spec.id for c in checked], metadata_=req.metadata,
        idempotency_key=idempotency_key, request_hash=fingerprint)
    made = [new_job(services.settings, principal, replace(req, model=c.spec.id), c, stored,
                    None, None, comparison_id=comparison.id) for c in checked]
    try:
        with session.begin_nested():
            session.add(comparison)
            session.flush()
            session.add_all(made)
            session.flush()
            for job in made:
                add_created_event(session, job)
            uses.record(session, [(job.id, job.tenant_id, key) for job in made
                                  for key in uses.keys_of(job)])
            session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the insert.
        if idempotency_key and (winner := replay(session, Comparison, principal.tenant_id,
                                                 idempotency_key, fingerprint,
                                                 what="comparison")):
            return winner, jobs_of(session, winner), False
        raise
    return comparison, made, True


def get(session: Session, tenant_id: str, comparison_id: str) -> Comparison:
    found = session.scalar(select(Comparison).where(Comparison.id == comparison_id,
                                                    Comparison.tenant_id == tenant_id))
    if found is None:
        raise NotFound(f"no comparison {comparison_id}")
    return found


def jobs_of(session: Session, comparison: Comparison) -> list[Job]:
    """The comparison's jobs in the order its models were asked."""
    rows = {j.fallback_from or j.model: j
            for j in session.scalars(select(Job).where(Job.comparison_id == comparison.id))}
    return [rows[m] for m in comparison.models if m in rows]


def list_recent(session: Session, tenant_id: str, *, limit: int,
                cursor: str | None = None) -> tuple[list[Comparison], str | None]:
    return newest_first(session, select(Comparison).where(Comparison.tenant_id == tenant_id),
                        Comparison.seq, limit=limit, cursor=cursor)


def vote(session: Session, tenant_id: str, comparison_id: str, model: str) -> Comparison:
    """One vote per comparison, for an output that exists; voting again moves it."""
    comparison = get(session, tenant_id, comparison_id)
    if model not in comparison.models:
        raise InvalidInput(f"model {model!r} is not in this comparison; it compares "
                           f"{', '.join(comparison.models)}", field="model")
    job = next(j for j in jobs_of(session, comparison) if (j.fallback_from or j.model) == model)
    if job.status != SUCCEEDED:
        raise Conflict(f"model {model!r}'s job is {job.status}: vote for an output that "
                       "succeeded", model=model, status=job.status)
    comparison.vote_model = model
    comparison.voted_at = utcnow()
    session.flush()
    return comparison


def votes_by_model(session: Session, tenant_id: str) -> dict[str, int]:
    rows = session.execute(select(Comparison.vote_model, func.count())
                           .where(Comparison.tenant_id == tenant_id,
                                  Comparison.vote_model.is_not(None))
                           .group_by(Comparison.vote_model)).all()
    return {model: count for model, count in rows if model is not None}


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def view(comparison: Comparison, jobs: list[Job], storage: Storage) -> dict[str, Any]:
    """The models side by side: each one's status, outputs, cost and times."""
    results = []
    for job in jobs:
        results.append({
            "model": job.fallback_from or job.model, "served_by": job.model,
            "job_id": job.id, "status": job.status,
            "outputs": [{"url": storage.presigned_get_url(o["key"]), "width": o["width"],
                         "height": o["height"], "content_type": o["content_type"]}
                        for o in job.outputs],
            "cost": {"estimated": money(job.cost_estimated),
                     "actual": money(job.cost_actual) if job.cost_actual is not None else None,
                     "currency": job.currency},
            "queue_seconds": _seconds(job.created_at, job.started_at),
            "run_seconds": _seconds(job.started_at, job.finished_at),
            "error": ({"code": job.error_code, "message": job.error_message}
                      if job.error_code else None)})
    done = all(j.status in TERMINAL for j in jobs)
    actual = [j.cost_actual for j in jobs if j.cost_actual is not None]
    return {
        "id": comparison.id, "status": "completed" if done else "running",
        "operation": comparison.operation, "prompt": comparison.prompt,
        "models": list(comparison.models), "metadata": comparison.metadata_,
        "created_at": iso(comparison.created_at),
        "vote": ({"model": comparison.vote_model, "at": iso(comparison.voted_at)}
                 if comparison.vote_model else None),
        "estimated_total": money(sum((j.cost_estimated for j in jobs), Decimal(0))),
        "actual_total": money(sum(actual, Decimal(0))) if done else None,
        "results": results,
    }
