"""Admission: a tenant's plan limit and monthly budgets, checked before a job exists.

The figure checked is what the month has cost plus what is still in flight:
spent (the ledger since the month began) + the estimates of the tenant's jobs
whose cost is not known yet + this request's estimate must stay within the
budget. A job's estimate stops counting as in flight when its cost becomes
known (`jobs.cost_actual`), at which point the ledger counts what it really
cost. A submit whose outcome is unknown keeps its estimate counted for the
month it happened in: the provider may have billed it.

The check is atomic: a submission that has a limit to respect first bumps its
tenant's row (`admission_seq`), which locks it until the submission commits,
so parallel submissions of one tenant are checked one after another and
cannot overspend together. Tenants without limits take no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, bindparam, false, func, or_, select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import utcnow
from shared.errors import BudgetExceeded, NotFound, PlanLimitExceeded
from shared.formats import money
from shared.models import Batch, Charge, Job, ModelBudget, Tenant
from shared.statuses import QUEUED, RUNNING

UNFINISHED = (QUEUED, RUNNING)


def period_start(now: datetime, period: str) -> datetime:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_end(now: datetime, period: str) -> datetime:
    start = period_start(now, period)
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class BudgetUse:
    """Where one budget stands: the month's spend, what is in flight, and the limit."""

    scope: str  # "tenant" or "model:<id>"
    budget: Decimal
    spent: Decimal
    in_flight: Decimal
    estimate: Decimal  # what the request would add to this budget

    def room(self) -> Decimal:
        return self.budget - self.spent - self.in_flight

    @property
    def ok(self) -> bool:
        return self.estimate <= self.room()

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "budget": money(self.budget), "spent": money(self.spent),
                "in_flight": money(self.in_flight), "estimate": money(self.estimate),
                "remaining": money(self.room()), "ok": self.ok}


@dataclass(frozen=True)
class Verdict:
    """Whether `count` more jobs costing `estimate` in all fit the tenant's limits."""

    plan: str
    plan_limit: int | None
    plan_used: int
    count: int
    estimate: Decimal
    budgets: tuple[BudgetUse, ...]
    period: str
    resets_at: datetime

    @property
    def plan_ok(self) -> bool:
        return self.plan_limit is None or self.plan_used + self.count <= self.plan_limit

    @property
    def over_budget(self) -> BudgetUse | None:
        return next((b for b in self.budgets if not b.ok), None)

    @property
    def ok(self) -> bool:
        return self.plan_ok and self.over_budget is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "plan": self.plan, "plan_limit": self.plan_limit,
                "plan_used": self.plan_used, "period": self.period,
                "budgets": [b.as_dict() for b in self.budgets]}


def _spent(tenant_id: str, since: datetime, model: str | None) -> Select[Any]:
    query = select(func.sum(Charge.amount)).where(Charge.tenant_id == tenant_id,
                                                  Charge.charged_at >= since)
    if model is not None:
        query = query.where(Charge.model == model)
    return query


def _in_flight(tenant_id: str, since: datetime, model: str | None) -> Select[Any]:
    query = select(func.sum(Job.cost_estimated)).where(
        Job.tenant_id == tenant_id, Job.cost_actual.is_(None),
        or_(Job.status.in_(UNFINISHED), Job.updated_at >= since))
    if model is not None:
        query = query.where(Job.model == model)
    return query


def _unexpanded(tenant_id: str) -> Select[Any]:
    """Batches still creating their jobs: their estimates not in jobs yet."""
    return select(func.sum(Batch.estimate_pending)).where(Batch.tenant_id == tenant_id,
                                                          Batch.status == "expanding")


def _use(session: Session, tenant_id: str, since: datetime,
         model: str | None) -> tuple[Decimal, Decimal]:
    """(spent, in flight), read in one statement, hence from one snapshot.

    A job whose charge commits meanwhile moves from in flight to spent in one
    transaction; two statements under READ COMMITTED (PostgreSQL) could see it in
    neither, and admit a request the budget has no room for. (Likewise a batch's
    chunk moves estimates from the batch to its new jobs in one transaction.)
    Model budgets do not see unexpanded batches: those are counted per tenant.
    """
    pending = (_unexpanded(tenant_id) if model is None
               else select(func.sum(Batch.estimate_pending)).where(false()))
    spent, in_flight, unexpanded = session.execute(select(
        _spent(tenant_id, since, model).scalar_subquery(),
        _in_flight(tenant_id, since, model).scalar_subquery(),
        pending.scalar_subquery())).one()
    return (spent if spent is not None else Decimal(0),
            (in_flight or Decimal(0)) + (unexpanded or Decimal(0)))


def _limits(session: Session, settings: Settings, tenant_id: str,
            model: str) -> tuple[Tenant, str, int | None, Decimal | None]:
    tenant = session.get(Tenant, tenant_id, populate_existing=True)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id}")
    plan = tenant.plan or settings.default_plan
    limit = settings.plan_limits.get(plan, settings.plan_limits[settings.default_plan])
    model_budget = session.scalar(select(ModelBudget.monthly_budget).where(
        ModelBudget.tenant_id == tenant_id, ModelBudget.model == model))
    return tenant, plan, limit, model_budget


def evaluate(session: Session, settings: Settings, tenant_id: str, model: str,
             estimate: Decimal, count: int = 1, *, now: datetime | None = None,
             per_model: dict[str, Decimal] | None = None) -> Verdict:
    """Where the tenant stands against each of its limits for this request (no lock).

    `per_model`: a request of many jobs (a batch) gives each model's share, so that
    each model budget sees only its own."""
    now = now or utcnow()
    per_model = per_model or {model: estimate}
    tenant, plan, limit, _ = _limits(session, settings, tenant_id, model)
    used = 0
    if limit is not None:
        used = session.scalar(select(func.count()).select_from(Job).where(
            Job.tenant_id == tenant_id,
            Job.created_at >= period_start(now, settings.plan_period))) or 0
    month = period_start(now, "month")
    budgets = []
    if tenant.monthly_budget is not None:
        budgets.append(BudgetUse("tenant", tenant.monthly_budget,
                                 *_use(session, tenant_id, month, None), estimate))
    model_budgets = dict(session.execute(select(ModelBudget.model, ModelBudget.monthly_budget)
                                         .where(ModelBudget.tenant_id == tenant_id,
                                                ModelBudget.model.in_(list(per_model)))).all())
    for name, share in per_model.items():
        if name in model_budgets:
            budgets.append(BudgetUse(f"model:{name}", model_budgets[name],
                                     *_use(session, tenant_id, month, name), share))
    return Verdict(plan=plan, plan_limit=limit, plan_used=used, count=count, estimate=estimate,
                   budgets=tuple(budgets), period=settings.plan_period,
                   resets_at=period_end(now, settings.plan_period))


# Asked on every POST: built once, run with parameters (see shared.jobs.states on why).
_STANDING = select(
    Tenant.plan, Tenant.monthly_budget,
    select(func.count()).select_from(ModelBudget).where(
        ModelBudget.tenant_id == bindparam("p_tenant"),
        ModelBudget.model.in_(bindparam("p_models", expanding=True)))
    .scalar_subquery()).where(Tenant.id == bindparam("p_tenant"))


def admit(session: Session, settings: Settings, tenant_id: str, model: str,
          estimate: Decimal, count: int = 1,
          per_model: dict[str, Decimal] | None = None) -> None:
    """Refuse the request if it does not fit; otherwise hold the tenant's lock until the
    caller commits the jobs it inserts in this same transaction."""
    # Most tenants have no limit at all: one statement tells, and they take no lock.
    models = list(per_model or {model: estimate})
    standing = session.connection().execute(
        _STANDING, {"p_tenant": tenant_id, "p_models": models}).first()
    if standing is None:
        raise NotFound(f"no tenant {tenant_id}")
    plan = standing[0] or settings.default_plan
    limit = settings.plan_limits.get(plan, settings.plan_limits[settings.default_plan])
    if limit is None and not standing[2] and standing[1] is None:
        return
    session.execute(update(Tenant).where(Tenant.id == tenant_id)
                    .values(admission_seq=Tenant.admission_seq + 1)
                    .execution_options(synchronize_session=False))
    # Read again under the lock: a parallel submission may have changed everything.
    now = utcnow()
    verdict = evaluate(session, settings, tenant_id, model, estimate, count, now=now,
                       per_model=per_model)
    if not verdict.plan_ok:
        raise PlanLimitExceeded(
            f"plan {verdict.plan!r} allows {verdict.plan_limit} edits per "
            f"{verdict.period}; {verdict.plan_used} used, {count} more asked",
            retry_after=max(1.0, (verdict.resets_at - now).total_seconds()),
            plan=verdict.plan, limit=verdict.plan_limit, used=verdict.plan_used,
            period=verdict.period,
            resets_at=verdict.resets_at.astimezone(UTC).isoformat().replace("+00:00", "Z"))
    over = verdict.over_budget
    if over is not None:
        scope = ("the tenant's" if over.scope == "tenant"
                 else f"model {over.scope[6:]}'s")
        raise BudgetExceeded(
            f"the estimate of {money(over.estimate)} USD would take {scope} spend this month "
            f"({money(over.spent)} spent + {money(over.in_flight)} in flight) over its "
            f"budget of {money(over.budget)} USD",
            **over.as_dict(), currency="USD", month=now.strftime("%Y-%m"))


def standing(session: Session, settings: Settings, tenant_id: str) -> Verdict:
    """Where the tenant stands now with nothing asked: its plan, its tenant budget and
    each model budget, what is spent, in flight and left (GET /v1/budget)."""
    models = list(session.scalars(select(ModelBudget.model)
                                  .where(ModelBudget.tenant_id == tenant_id)
                                  .order_by(ModelBudget.model)))
    # `ok` then says whether one more job (of no cost) would be admitted.
    return evaluate(session, settings, tenant_id, models[0] if models else "", Decimal(0), 1,
                    per_model={m: Decimal(0) for m in models} or None)
