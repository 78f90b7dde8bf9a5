"""The ledger: one row per charged provider call, written with the transition it belongs to.

The rules that keep the money honest live here:
- a call is charged in the same transaction that records its outcome (success,
  a billed failure, or a canceled job's call that completed anyway), so a job
  is never marked succeeded without its charge, nor charged without its state;
- (job_id, attempt) is unique: one attempt makes at most one provider call, so
  a second charge for the same call cannot be written;
- a job's `cost_actual` is always the sum of its ledger rows, set when that sum
  becomes known (None means "not known yet": queued, running, or a submit
  whose outcome is unknown).
"""

from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.models import Charge, Job
from shared.providers.pricing import Price

log = logging.getLogger(__name__)


def reported_price(amount: Decimal, provider: str) -> Price:
    """A provider's own figure for a call, when it reports one, itemized as one unit."""
    return Price(units=Decimal(1), unit="call", unit_price=amount, currency="USD",
                 rule="provider_reported", taken=date.today(), source=provider)


def charge(session: Session, job: Job, price: Price, *, reason: str) -> Charge | None:
    """Record the job's current call (attempt `job.attempts`) as charged at `price`.

    Answers None, and charges nothing, if that call was charged already: the
    unique constraint is the last line of defence, and its violation is logged
    rather than allowed to undo the transition it travels with.
    """
    now = utcnow()
    row = Charge(job_id=job.id, attempt=job.attempts, tenant_id=job.tenant_id,
                 provider=job.provider, model=job.model, operation=job.operation,
                 provider_request_id=job.provider_request_id, units=price.units,
                 unit=price.unit, unit_price=price.unit_price, amount=price.amount,
                 currency=price.currency, price_rule=price.rule, price_taken=price.taken,
                 price_source=price.source[:200], reason=reason, charged_at=now,
                 charged_on=now.date())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        log.error("job %s: attempt %s is charged already; not charging it again",
                  job.id, job.attempts)
        close(session, job.id)
        return None
    close(session, job.id)
    return row


def close(session: Session, job_id: str) -> Decimal:
    """The job's cost is known now: set `cost_actual` to what the ledger holds for it."""
    total = job_total(session, job_id)
    session.execute(update(Job).where(Job.id == job_id).values(cost_actual=total)
                    .execution_options(synchronize_session=False))
    return total


def job_total(session: Session, job_id: str) -> Decimal:
    total = session.scalar(select(func.sum(Charge.amount)).where(Charge.job_id == job_id))
    return total if total is not None else Decimal(0)


def charges_for(session: Session, job_id: str) -> list[Charge]:
    return list(session.scalars(select(Charge).where(Charge.job_id == job_id)
                                .order_by(Charge.id)))
