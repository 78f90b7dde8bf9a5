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
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.models import Charge, Job
from shared.providers.pricing import Price

log = logging.getLogger(__name__)


def reported_price(amount: Decimal, provider: str) -> Price:
    """A provider's own figure for a call, when it reports one, itemized as one unit."""
    return Price(units=Decimal(1), unit="call", unit_price=amount, currency="USD",
                 rule="provider_reported", taken=date.today(), source=provider)


def charge(session: Session, job: Job, price: Price, *, reason: str) -> bool:
    """Record the job's current call (attempt `job.attempts`) as charged at `price`, and
    set the job's `cost_actual` to its ledger's sum. Answers whether it charged.

    A call charged already is not charged again: the unique (job_id, attempt) is the
    last line of defence, met by an INSERT that does nothing on conflict (one statement,
    no savepoint) and says by RETURNING whether it wrote; a second charge is logged rather
    than allowed to undo the transition it travels with.
    """
    now = utcnow()
    values = dict(job_id=job.id, attempt=job.attempts, tenant_id=job.tenant_id,
                  provider=job.provider, model=job.model, operation=job.operation,
                  provider_request_id=job.provider_request_id, units=price.units,
                  unit=price.unit, unit_price=price.unit_price, amount=price.amount,
                  currency=price.currency, price_rule=price.rule, price_taken=price.taken,
                  price_source=price.source[:200], reason=reason, charged_at=now,
                  charged_on=now.date())
    charged = _insert_once(session, values)
    if not charged:
        log.error("job %s: attempt %s is charged already; not charging it again",
                  job.id, job.attempts)
    close(session, job.id)
    return charged


# Core statements built once, run with parameters on the session's connection: the
# charge is on every job's finishing path (see shared.jobs.states on why Core there).
_CHARGES = cast(Table, Charge.__table__)
_JOBS = cast(Table, Job.__table__)
_INSERT_ONCE = {
    "postgresql": postgresql_insert(_CHARGES).on_conflict_do_nothing().returning(_CHARGES.c.id),
    "sqlite": sqlite_insert(_CHARGES).on_conflict_do_nothing().returning(_CHARGES.c.id),
}
_CLOSE = (update(_JOBS).where(_JOBS.c.id == bindparam("p_job"))
          .values(cost_actual=func.coalesce(
              select(func.sum(_CHARGES.c.amount))
              .where(_CHARGES.c.job_id == bindparam("p_job")).scalar_subquery(), 0))
          .returning(_JOBS.c.cost_actual))


def _insert_once(session: Session, values: dict[str, Any]) -> bool:
    connection = session.connection()
    statement = _INSERT_ONCE["postgresql" if connection.dialect.name == "postgresql"
                             else "sqlite"]
    return connection.execute(statement, values).first() is not None


def close(session: Session, job_id: str) -> Decimal:
    """The job's cost is known now: set `cost_actual` to what the ledger holds for it."""
    total = session.connection().execute(_CLOSE, {"p_job": job_id}).scalar()
    return total if total is not None else job_total(session, job_id)


def job_total(session: Session, job_id: str) -> Decimal:
    total = session.scalar(select(func.sum(Charge.amount)).where(Charge.job_id == job_id))
    return total if total is not None else Decimal(0)


def charges_for(session: Session, job_id: str) -> list[Charge]:
    return list(session.scalars(select(Charge).where(Charge.job_id == job_id)
                                .order_by(Charge.id)))
