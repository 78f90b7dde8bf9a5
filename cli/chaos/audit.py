"""Reading the truth after a chaos run, and checking it against the invariants.

The audit reads only what is authoritative: the jobs, events and charges in the
database, the objects in S3, and what the simulators say they billed. It never
trusts the harness's own idea of what happened.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from cli.chaos.config import TERMINAL
from cli.chaos.workload import Submissions


def sim_stats(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/_sim/stats", timeout=10)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def status_counts(database_url: str) -> Counter[str]:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Job

    with session_scope(database_url) as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return Counter({str(status): int(count) for status, count in rows})


def s3_output_keys(settings: Any) -> dict[str, set[str]]:
    """Every object under `outputs/`, by the job id in its key."""
    from shared.storage import Storage

    storage = Storage(settings)
    found: dict[str, set[str]] = {}
    paginator = storage.client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=storage.bucket, Prefix="outputs/"):
        for item in page.get("Contents", []):
            key = item["Key"]
            parts = key.split("/")
            if len(parts) >= 3:
                found.setdefault(parts[1], set()).add(key)
    return found


@dataclass
class Audit:
    report: dict[str, Any]
    timelines: dict[str, list[str]]


def audit(database_url: str, settings: Any, stats: dict[str, dict[str, Any]],
          submissions: Submissions, counters: dict[str, Any]) -> Audit:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Charge, Job, JobEvent

    with session_scope(database_url) as session:
        jobs = list(session.scalars(select(Job)))
        charges = list(session.scalars(select(Charge)))
        succeeded_events = {job_id: int(n) for job_id, n in session.execute(
            select(JobEvent.job_id, func.count()).where(JobEvent.type == "succeeded")
            .group_by(JobEvent.job_id)).all()}
        session.expunge_all()
    objects = s3_output_keys(settings)
    known_ids = {job.id for job in jobs}

    lost = [job for job in jobs if job.status not in TERMINAL]
    failed = Counter(job.error_code or "unknown" for job in jobs if job.status == "failed")

    duplicate_outputs: dict[str, str] = {}
    for job in jobs:
        kept = {str(o.get("key")) for o in job.outputs or []}
        extra = sorted(objects.get(job.id, set()) - kept)
        if succeeded_events.get(job.id, 0) > 1:
            duplicate_outputs[job.id] = f"{succeeded_events[job.id]} succeeded events"
        elif extra:
            duplicate_outputs[job.id] = (f"{job.status} job, objects it does not record: "
                                         f"{', '.join(extra)}")
    for job_id in sorted(set(objects) - known_ids):
        duplicate_outputs[job_id] = "outputs of a job that does not exist"

    per_call = Counter((c.job_id, c.attempt) for c in charges)
    per_success = Counter(c.job_id for c in charges if c.reason == "succeeded")
    per_request = Counter((c.provider, c.provider_request_id or "") for c in charges
                          if c.provider_request_id)
    same_call = sum(n - 1 for n in per_call.values() if n > 1)
    two_successes = sum(n - 1 for n in per_success.values() if n > 1)
    same_request = sum(n - 1 for n in per_request.values() if n > 1)
    charged_twice = sorted({job_id for (job_id, _), n in per_call.items() if n > 1}
                           | {job_id for job_id, n in per_success.items() if n > 1}
                           | {c.job_id for c in charges
                              if c.provider_request_id
                              and per_request[(c.provider, c.provider_request_id)] > 1})

    zero = Decimal(0)
    recorded_spend = sum((c.amount for c in charges), zero)
    sum_of_actual = sum((job.cost_actual for job in jobs if job.cost_actual is not None), zero)
    ambiguous = [job for job in jobs if job.status in TERMINAL and job.cost_actual is None]
    ambiguous_estimate = sum((job.cost_estimated for job in ambiguous), zero)
    billed = {name: Decimal(str(s["billed_usd"])) for name, s in stats.items()}
    provider_billed = sum(billed.values(), zero)
    gap = provider_billed - recorded_spend

    by_provider: dict[str, Any] = {}
    for name in stats:
        recorded = sum((c.amount for c in charges if c.provider == name), zero)
        estimate = sum((j.cost_estimated for j in ambiguous if j.provider == name), zero)
        by_provider[name] = {
            "jobs": sum(1 for j in jobs if j.provider == name),
            "billed": _money(billed[name]), "recorded": _money(recorded),
            "ambiguous": sum(1 for j in ambiguous if j.provider == name),
            "ambiguous_estimate": _money(estimate),
            "gap_within_ambiguous": zero <= billed[name] - recorded <= estimate,
            "submits": stats[name].get("submits"),
            "faults_injected": stats[name].get("faults_injected", {}),
        }

    duplicate_charges = same_call + two_successes + same_request
    ok = (not lost and not duplicate_outputs and duplicate_charges == 0
          and recorded_spend == sum_of_actual and zero <= gap <= ambiguous_estimate)
    report: dict[str, Any] = {
        "submitted": len(submissions.job_ids),
        "succeeded": sum(1 for j in jobs if j.status == "succeeded"),
        "failed": dict(sorted(failed.items())),
        "canceled": sum(1 for j in jobs if j.status == "canceled"),
        "lost": len(lost),
        "lost_by_status": dict(Counter(j.status for j in lost)),
        "duplicate_outputs": len(duplicate_outputs),
        "duplicate_outputs_detail": dict(sorted(duplicate_outputs.items())[:10]),
        "duplicate_charges": duplicate_charges,
        "duplicate_charges_detail": {"same_job_attempt": same_call,
                                     "second_success_row": two_successes,
                                     "same_provider_request": same_request},
        "provider_billed": _money(provider_billed),
        "recorded_spend": _money(recorded_spend),
        "sum_of_actual": _money(sum_of_actual),
        "ambiguous_submissions": len(ambiguous),
        "ambiguous_estimate": _money(ambiguous_estimate),
        "billed_minus_recorded": _money(gap),
        "by_provider": by_provider,
        "jobs_in_database": len(jobs),
        "jobs_not_returned_to_client": len(known_ids - set(submissions.job_ids.values())),
        "submit_errors": dict(submissions.errors),
        "submit_retries": submissions.retries,
        "submit_replayed": submissions.replayed,
        **counters,
        "ok": ok,
    }
    # The job that took longest to finish shows how slow recovery was, even in a good run.
    slowest = max((j for j in jobs if j.finished_at is not None),
                  key=lambda j: j.finished_at - j.created_at, default=None)  # type: ignore[operator]
    report["examples"] = {"lost": [j.id for j in lost][:10],
                          "duplicate_outputs": sorted(duplicate_outputs)[:10],
                          "duplicate_charges": charged_twice[:10],
                          "slowest": slowest.id if slowest is not None else None}
    suspects = list(dict.fromkeys(
        [j.id for j in lost][:10] + sorted(duplicate_outputs)[:10] + charged_twice[:10]
        + ([slowest.id] if slowest is not None else [])))
    return Audit(report, timelines(database_url, suspects))


def timelines(database_url: str, job_ids: list[str]) -> dict[str, list[str]]:
    """Each job's events, as lines, for the human summary."""
    if not job_ids:
        return {}
    from sqlalchemy import select

    from shared.db import session_scope
    from shared.models import JobEvent

    out: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    with session_scope(database_url) as session:
        for event in session.scalars(select(JobEvent).where(JobEvent.job_id.in_(job_ids))
                                     .order_by(JobEvent.seq)):
            move = f" {event.from_status or ''}->{event.to_status}" if event.to_status else ""
            detail = json.dumps(event.detail, default=str)[:160] if event.detail else ""
            out[event.job_id].append(f"{event.at:%H:%M:%S.%f}"[:-3]
                                     + f" {event.type}{move} {detail}")
    return out


def _money(value: Decimal) -> str:
    text = format(value.normalize(), "f") if value else "0"
    return text
