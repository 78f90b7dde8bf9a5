"""Admission against plans and monthly budgets, on the real databases.

The end-to-end race through the HTTP API is in tests/integration/test_costs.py.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from shared.config import Settings
from shared.db import session_scope
from shared.errors import BudgetExceeded, PlanLimitExceeded
from shared.jobs.states import new_job_id
from shared.models import Charge, Job, Tenant
from shared.money import budgets
from shared.tenants import get_or_create_tenant, set_limits
from tests.conftest import make_settings

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]

D = Decimal
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url=database_url,
                         plan_limits={"free": 5, "pro": 100, "unlimited": None})


def new_tenant(settings: Settings, **limits: Any) -> str:
    with session_scope(settings.database_url) as session:
        tenant = get_or_create_tenant(session, f"budget-{uuid.uuid4().hex[:10]}")
        set_limits(session, tenant, **limits)
        return tenant.id


def add_job(settings: Settings, tenant_id: str, *, estimate: str, status: str = "queued",
            actual: str | None = None, model: str = "qwen-edit",
            at: datetime | None = None) -> str:
    at = at or datetime.now(UTC)
    with session_scope(settings.database_url) as session:
        job = Job(id=new_job_id(), tenant_id=tenant_id, status=status,
                  operation="general_edit", model=model, provider="wavespeed",
                  cost_estimated=D(estimate), cost_actual=None if actual is None else D(actual),
                  created_at=at, updated_at=at)
        session.add(job)
        return job.id


def add_charge(settings: Settings, tenant_id: str, amount: str, *, model: str = "qwen-edit",
               at: datetime | None = None) -> None:
    at = at or datetime.now(UTC)
    job_id = add_job(settings, tenant_id, estimate=amount, status="succeeded", actual=amount,
                     model=model, at=at)
    with session_scope(settings.database_url) as session:
        session.add(Charge(job_id=job_id, attempt=1, tenant_id=tenant_id, provider="wavespeed",
                           model=model, operation="general_edit", units=D(1), unit="image",
                           unit_price=D(amount), amount=D(amount), currency="USD",
                           price_rule="flat", price_taken=at.date(), price_source="test",
                           reason="succeeded", charged_at=at, charged_on=at.date()))


def admit(settings: Settings, tenant_id: str, estimate: str, model: str = "qwen-edit") -> None:
    with session_scope(settings.database_url) as session:
        budgets.admit(session, settings, tenant_id, model, D(estimate))


def test_spent_plus_in_flight_plus_the_estimate_must_fit_the_budget(settings: Settings) -> None:
    # given a 1.00 budget with 0.50 spent this month and 0.30 of jobs in flight
    tenant = new_tenant(settings, monthly_budget=D("1.00"))
    add_charge(settings, tenant, "0.50")
    add_job(settings, tenant, estimate="0.30")
    # when a job estimated at exactly what is left arrives, it fits
    admit(settings, tenant, "0.20")
    add_job(settings, tenant, estimate="0.20")
    # and one more cent does not, with every number in the refusal
    with pytest.raises(BudgetExceeded) as refused:
        admit(settings, tenant, "0.01")
    assert refused.value.status == 402
    assert {k: refused.value.extra[k] for k in ("scope", "budget", "spent", "in_flight",
                                                "estimate", "remaining")} == {
        "scope": "tenant", "budget": "1", "spent": "0.5", "in_flight": "0.5",
        "estimate": "0.01", "remaining": "0"}
    assert "0.5 spent + 0.5 in flight" in refused.value.message


def test_what_counts_as_in_flight(settings: Settings) -> None:
    # given jobs whose cost is known (done) and jobs whose cost is not (in flight)
    tenant = new_tenant(settings, monthly_budget=D("10"))
    add_job(settings, tenant, estimate="1", status="queued")
    add_job(settings, tenant, estimate="2", status="running")
    add_job(settings, tenant, estimate="4", status="canceled")  # a call still settling
    add_job(settings, tenant, estimate="8", status="failed", actual="0")  # known: nothing
    add_job(settings, tenant, estimate="16", status="failed",  # unknown, last month: gone
            at=datetime.now(UTC) - timedelta(days=40))
    # when the tenant's standing is evaluated
    with session_scope(settings.database_url) as session:
        verdict = budgets.evaluate(session, settings, tenant, "qwen-edit", D("0.5"))
    # then only the unknown costs of this month and the unfinished jobs count
    [use] = verdict.budgets
    assert (use.spent, use.in_flight, use.room()) == (D(0), D(7), D(3))
    assert verdict.ok


def test_last_months_spend_does_not_count(settings: Settings) -> None:
    tenant = new_tenant(settings, monthly_budget=D("1"))
    add_charge(settings, tenant, "0.90", at=datetime.now(UTC) - timedelta(days=40))
    admit(settings, tenant, "1")


def test_a_model_budget_limits_only_that_model(settings: Settings) -> None:
    # given 0.10 a month for gpt-image-1-edit, and 0.08 already spent on it
    tenant = new_tenant(settings, model_budgets={"gpt-image-1-edit": D("0.10")})
    add_charge(settings, tenant, "0.08", model="gpt-image-1-edit")
    add_charge(settings, tenant, "5", model="qwen-edit")
    # then other models are not limited, and that one is
    admit(settings, tenant, "1", model="qwen-edit")
    with pytest.raises(BudgetExceeded) as refused:
        admit(settings, tenant, "0.042", model="gpt-image-1-edit")
    assert refused.value.extra["scope"] == "model:gpt-image-1-edit"
    assert refused.value.extra["spent"] == "0.08"


def test_a_plan_allows_its_edits_per_period_then_says_when_it_resets(
        settings: Settings) -> None:
    # given a tenant on the free plan (5 edits a month)
    tenant = new_tenant(settings, plan="free")
    for _ in range(5):
        admit(settings, tenant, "0")
        add_job(settings, tenant, estimate="0", status="succeeded", actual="0")
    # when a sixth arrives
    with pytest.raises(PlanLimitExceeded) as refused:
        admit(settings, tenant, "0")
    # then it is refused until the month turns
    error = refused.value
    assert (error.status, error.extra["limit"], error.extra["used"]) == (429, 5, 5)
    assert error.extra["resets_at"].endswith("-01T00:00:00Z")
    assert error.retry_after is not None and error.retry_after > 0


def test_without_limits_nothing_is_locked_or_refused(settings: Settings) -> None:
    tenant = new_tenant(settings)
    admit(settings, tenant, "1000000")
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(Tenant.admission_seq).where(Tenant.id == tenant)) == 0


def test_period_boundaries() -> None:
    assert budgets.period_start(NOW, "month") == datetime(2026, 11, 1, tzinfo=UTC)
    assert budgets.period_end(NOW, "month") == datetime(2026, 12, 1, tzinfo=UTC)
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert budgets.period_end(december, "month") == datetime(2027, 1, 1, tzinfo=UTC)
    assert budgets.period_start(NOW, "day") == datetime(2026, 11, 26, tzinfo=UTC)
    assert budgets.period_end(NOW, "day") == datetime(2026, 11, 27, tzinfo=UTC)


def test_parallel_admissions_never_overspend(settings: Settings) -> None:
    # given a budget with room for exactly 10 jobs at 0.02
    tenant = new_tenant(settings, monthly_budget=D("0.20"))
    accepted: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(20)

    def submit() -> None:
        start.wait()
        try:
            with session_scope(settings.database_url) as session:
                budgets.admit(session, settings, tenant, "qwen-edit", D("0.02"))
                job = Job(id=new_job_id(), tenant_id=tenant, status="queued",
                          operation="general_edit", model="qwen-edit", provider="wavespeed",
                          cost_estimated=D("0.02"))
                session.add(job)
            accepted.append(job.id)
        except BudgetExceeded as exc:
            refused.append(exc.code)

    # when 20 submissions race each other
    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then exactly 10 got in, and the rest were refused with budget_exceeded
    assert (len(accepted), refused) == (10, ["budget_exceeded"] * 10)
    with session_scope(settings.database_url) as session:
        total = session.scalar(select(func.sum(Job.cost_estimated))
                               .where(Job.tenant_id == tenant))
    assert total == D("0.20")
