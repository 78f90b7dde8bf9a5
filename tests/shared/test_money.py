"""Money columns are exact on both databases, in single values and in SUM()."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from shared.db import session_scope
from shared.jobs.states import new_job_id
from shared.models import Job
from shared.tenants import get_or_create_tenant

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]


def test_sums_of_prices_are_exact(database_url: str) -> None:
    # given 1,000 jobs at 0.011 and 1,000 at 0.167 (neither is exact as a float)
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, f"money-{uuid.uuid4().hex[:8]}")
        session.add_all(Job(id=new_job_id(), tenant_id=tenant.id, status="queued",
                            operation="general_edit", model="m", provider="p",
                            cost_estimated=Decimal(price))
                        for price in ["0.011", "0.167"] * 1000)
    # when the database adds them up
    with session_scope(database_url) as session:
        total = session.scalar(select(func.sum(Job.cost_estimated))
                               .where(Job.tenant_id == tenant.id))
        one = session.scalar(select(Job.cost_estimated).where(Job.tenant_id == tenant.id)
                             .order_by(Job.seq).limit(1))
    # then the sum is exact, as a Decimal, and so is each value
    assert isinstance(total, Decimal) and total == Decimal("178")
    assert one == Decimal("0.011")


@pytest.mark.parametrize("bad", [Decimal("0.0000001"), 0.02])
def test_money_finer_than_a_micro_unit_or_a_float_is_refused(database_url: str,
                                                              bad: object) -> None:
    with pytest.raises(StatementError), session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, f"money-{uuid.uuid4().hex[:8]}")
        session.add(Job(id=new_job_id(), tenant_id=tenant.id, status="queued",
                        operation="general_edit", model="m", provider="p",
                        cost_estimated=bad))
        session.flush()
