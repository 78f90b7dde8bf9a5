"""How an attempt ends when it did not succeed: another attempt, a failed job, or (for a
call that outlived its job) a settled cost.

Money (see shared.money.ledger): a provider call that the provider billed is charged in
the transaction that records its outcome, whatever the outcome; a call whose billing
cannot be known leaves the job's cost unknown rather than claimed as zero.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import session_scope, utcnow
from shared.errors import EditqError, ProviderOutcomeUnknown
from shared.jobs.outcomes import Action, RunOutcome
from shared.jobs.retry import Retries
from shared.jobs.states import CANCELED, DEADLINE_EXCEEDED, fail, is_settling, requeue, settle
from shared.models import Job
from shared.money import ledger
from shared.providers.classify import trips_breaker
from shared.providers.pricing import Price
from shared.services import Services


def current(session: Session, job_id: str) -> Job | None:
    """The job's row as it is now (not as this session first loaded it)."""
    return session.scalar(select(Job).where(Job.id == job_id)
                          .execution_options(populate_existing=True))


def past_deadline(job: Job, after: float = 0.0) -> bool:
    return job.deadline_at is not None and (
        utcnow() + timedelta(seconds=after) > job.deadline_at)


def deadline_failure(job: Job, services: Services, when: str) -> RunOutcome:
    """Fail a job whose deadline has passed, with no call of its out (so it costs what
    its earlier calls cost, usually nothing)."""
    with session_scope(services.settings.database_url) as session:
        if fail(session, job.id, DEADLINE_EXCEEDED,
                f"the job's deadline ({job.deadline_at:%Y-%m-%dT%H:%M:%SZ}) passed {when}"):
            ledger.close(session, job.id)
            return RunOutcome(job.id, Action.FAILED, DEADLINE_EXCEEDED)
    return RunOutcome(job.id, Action.DISCARDED, "job left running state before its deadline")


def release_slot(job: Job, services: Services) -> None:
    """The call is over: its in-flight slot at the provider's limiter is free."""
    limiter = services.limiter(job.provider)
    if limiter is not None:
        limiter.release(job.id)


def provider_answered(provider: str, services: Services) -> None:
    breaker = services.breaker(provider)
    if breaker is not None:
        breaker.record_success()


def provider_failed(provider: str, services: Services, exc: EditqError) -> None:
    breaker = services.breaker(provider)
    if breaker is not None and trips_breaker(exc.code):
        breaker.record_failure()


def settle_call(session: Session, job: Job, billed: Price | None, why: str,
                known: bool = True) -> RunOutcome:
    """A call that outlived its job (canceled, or failed by its deadline) has ended:
    charge it if the provider billed it, and close (unless whether it was billed cannot
    be known: then the cost stays unknown)."""
    if billed is not None:
        now = current(session, job.id)
        reason = "canceled" if now is None or now.status == CANCELED else (
            now.error_code or "failed")
        ledger.charge(session, job, billed, reason=reason)
    total = ledger.close(session, job.id) if known else None
    settle(session, job.id, why, charged=total)
    return RunOutcome(job.id, Action.DISCARDED, f"canceled; its call settled at {total}")


def fail_attempt(job: Job, services: Services, exc: EditqError,
                 billed: Price | None = None) -> RunOutcome:
    """Retry or fail the attempt. `billed` is the price of a call the provider billed
    although it failed us (a filtered result, an unusable output, lost storage)."""
    release_slot(job, services)
    provider_failed(job.provider, services, exc)
    limiter = services.limiter(job.provider)
    if limiter is not None and exc.code == "provider_rate_limited" and exc.retry_after:
        limiter.pause(exc.retry_after)
    if billed is None and exc.extra.get("billed"):
        billed = services.catalog.get(job.model).price(job.options)
    # Whether the provider billed this call cannot be known (a submit sent but not
    # answered, a result gone): nothing is charged, and the cost is not claimed known.
    unknown = isinstance(exc, ProviderOutcomeUnknown) or bool(exc.extra.get("billing_unknown"))
    with session_scope(services.settings.database_url) as session:
        now = current(session, job.id)
        if is_settling(now):
            return settle_call(session, job, billed, f"failed after the job ended: {exc.code}",
                               known=not unknown)
        if billed is not None:
            ledger.charge(session, job, billed, reason=exc.code)
        attempts = now.attempts if now is not None else job.attempts
        delay = Retries.of(services.settings).after(exc, attempts)
        if delay is not None:
            if past_deadline(job, delay):
                session.commit()
                return deadline_failure(job, services, f"before another attempt could run "
                                                       f"(the last one: {exc.code})")
            if requeue(session, job.id, f"{exc.code}: {exc.message}", delay):
                return RunOutcome(job.id, Action.RETRY, f"{exc.code} after attempt {attempts}",
                                  delay=delay)
        if fail(session, job.id, exc.code, exc.message):
            if not unknown:
                ledger.close(session, job.id)
            return RunOutcome(job.id, Action.FAILED, exc.code)
    return RunOutcome(job.id, Action.DISCARDED, "job left running state before it failed")
