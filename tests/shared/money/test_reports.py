"""Cost reports over the ledger (shared/money/reports.py), on SQLite and PostgreSQL.

Ledger rows are seeded directly. The database is shared by the whole session,
so each test takes a tenant of its own and a ten-day window no other test
uses (`fresh_window`), which keeps reports over every tenant exact too.

The seeding helpers here are reused by tests/api/test_costs_api.py and
tests/cli/test_costs_cli.py.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.errors import InvalidInput, NotFound
from shared.formats import parse_instant
from shared.models import Charge, Job, Tenant
from shared.money.reports import (
    CostRow,
    cost_report,
    jobs_by_model,
    report_range,
    spend_by_model,
    tenant_id_for,
    to_csv,
)
from shared.tenants import get_or_create_tenant

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]

D = Decimal
_windows = itertools.count()


def fresh_window(year: int) -> datetime:
    """The first instant of a ten-day window no other caller in this process gets."""
    return datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=10 * next(_windows))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def add_tenant(session: Session, name: str | None = None) -> Tenant:
    return get_or_create_tenant(session, name or unique("tenant"))


def add_job(session: Session, tenant: Tenant, *, model: str = "model-a",
            provider: str = "prov-a", operation: str = "inpaint",
            status: str = "succeeded") -> Job:
    job = Job(id=uuid.uuid4().hex, tenant_id=tenant.id, status=status, operation=operation,
              model=model, provider=provider)
    session.add(job)
    session.flush()
    return job


def add_charge(session: Session, job: Job, amount: str, at: datetime,
               attempt: int = 1) -> Charge:
    row = Charge(job_id=job.id, attempt=attempt, tenant_id=job.tenant_id,
                 provider=job.provider, model=job.model, operation=job.operation,
                 units=D(1), unit="image", unit_price=D(amount), amount=D(amount),
                 currency="USD", price_rule="per_image", price_taken=at.date(),
                 reason="succeeded", charged_at=at, charged_on=at.date())
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class Seeded:
    mine: Tenant
    other: Tenant
    day1: datetime
    day2: datetime
    end: datetime


def seed_two_tenants(url: str, year: int) -> Seeded:
    """Mine: 0.011 + 0.25 + 0.05 on ws-a (two jobs, one retried), 0.4 on st-b; the other
    tenant: 1.5 on st-b. Over two days of a fresh window."""
    day1 = fresh_window(year)
    day2 = day1 + timedelta(days=1)
    with session_scope(url) as session:
        mine, other = add_tenant(session), add_tenant(session)
        job1 = add_job(session, mine, model="ws-a", provider="wavespeed", operation="inpaint")
        job2 = add_job(session, mine, model="ws-a", provider="wavespeed",
                       operation="general_edit")
        job3 = add_job(session, mine, model="st-b", provider="stability", operation="inpaint")
        job4 = add_job(session, other, model="st-b", provider="stability",
                       operation="inpaint")
        add_charge(session, job1, "0.011", day1 + timedelta(hours=10))
        add_charge(session, job2, "0.25", day1 + timedelta(hours=11))
        add_charge(session, job2, "0.05", day2 + timedelta(hours=9), attempt=2)
        add_charge(session, job3, "0.4", day2 + timedelta(hours=12))
        add_charge(session, job4, "1.5", day1 + timedelta(hours=8))
    return Seeded(mine, other, day1, day2, day1 + timedelta(days=10))


EXPECTED_MINE = {
    "model": [CostRow("st-b", 1, D("0.4")), CostRow("ws-a", 2, D("0.311"))],
    "provider": [CostRow("stability", 1, D("0.4")), CostRow("wavespeed", 2, D("0.311"))],
    "operation": [CostRow("inpaint", 2, D("0.411")), CostRow("general_edit", 1, D("0.3"))],
}


@pytest.mark.parametrize("group_by", ["model", "provider", "operation"])
def test_a_tenant_grouped_by_name_sums_exactly_largest_first(database_url: str,
                                                             group_by: str) -> None:
    # given two tenants' charges over two days
    seeded = seed_two_tenants(database_url, 2001)
    # when one tenant's costs are grouped
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=seeded.mine.id, group_by=group_by,
                             start=seeded.day1, end=seeded.end)
    # then each group is summed exactly, largest first, and the other tenant is absent
    assert list(report.rows) == EXPECTED_MINE[group_by]
    assert report.total == D("0.711")
    assert report.jobs == 3
    assert report.currency == "USD" and report.group_by == group_by
    assert (report.start, report.end) == (seeded.day1, seeded.end)


def test_by_day_uses_the_utc_day_in_day_order_and_counts_a_job_once_per_day(
        database_url: str) -> None:
    # given a job charged on two days (a retry) among others
    seeded = seed_two_tenants(database_url, 2001)
    # when grouped by day
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=seeded.mine.id, group_by="day",
                             start=seeded.day1, end=seeded.end)
    # then the days come in order, the retried job counts in each day but once in all
    assert list(report.rows) == [
        CostRow(seeded.day1.date().isoformat(), 2, D("0.261")),
        CostRow(seeded.day2.date().isoformat(), 2, D("0.45")),
    ]
    assert report.total == D("0.711")
    assert report.jobs == 3


def test_by_tenant_over_every_tenant_names_each(database_url: str) -> None:
    # given two tenants' charges in a window of their own
    seeded = seed_two_tenants(database_url, 2001)
    # when every tenant is reported, by tenant
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=None, group_by="tenant",
                             start=seeded.day1, end=seeded.end)
    # then each tenant is a row under its name, and the total covers both
    assert list(report.rows) == [CostRow(seeded.other.name, 1, D("1.5")),
                                 CostRow(seeded.mine.name, 3, D("0.711"))]
    assert report.total == D("2.211")
    assert report.jobs == 4


def test_another_tenants_charges_never_appear(database_url: str) -> None:
    # given two tenants with charges on the same model
    seeded = seed_two_tenants(database_url, 2001)
    # when the other tenant's costs are reported
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=seeded.other.id, group_by="model",
                             start=seeded.day1, end=seeded.end)
    # then only its own charge is there
    assert list(report.rows) == [CostRow("st-b", 1, D("1.5"))]
    assert report.total == D("1.5")


def test_the_range_includes_its_start_and_excludes_its_end(database_url: str) -> None:
    # given charges just before, exactly at, and just inside the range, and exactly at its end
    start = fresh_window(2001) + timedelta(days=1)
    end = start + timedelta(days=2)
    tick = timedelta(microseconds=1)
    with session_scope(database_url) as session:
        tenant = add_tenant(session)
        for amount, at in [("1", start - tick), ("0.02", start), ("0.003", end - tick),
                           ("4", end)]:
            add_charge(session, add_job(session, tenant), amount, at)
    # when the range is reported
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=tenant.id, group_by="model",
                             start=start, end=end)
    # then only the charges at the start and just before the end count
    assert list(report.rows) == [CostRow("model-a", 2, D("0.023"))]
    assert report.total == D("0.023")


def test_nothing_charged_is_an_empty_report_totalling_zero(database_url: str) -> None:
    # given a tenant without charges
    with session_scope(database_url) as session:
        tenant = add_tenant(session)
    start = fresh_window(2001)
    # when its costs are reported
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=tenant.id, group_by="day", start=start,
                             end=start + timedelta(days=1))
    # then there are no rows and the total is zero
    assert report.rows == ()
    assert report.total == D(0) and report.jobs == 0


def test_csv_has_a_header_and_one_plain_decimal_line_per_row(database_url: str) -> None:
    # given a report by model
    seeded = seed_two_tenants(database_url, 2001)
    with session_scope(database_url) as session:
        report = cost_report(session, tenant_id=seeded.mine.id, group_by="model",
                             start=seeded.day1, end=seeded.end)
    # when it is written as CSV
    text = to_csv(report)
    # then amounts are plain decimals, not 0.400000 or 4E-1
    assert text == "model,jobs,amount,currency\nst-b,1,0.4,USD\nws-a,2,0.311,USD\n"


def test_an_unknown_grouping_is_invalid_input(database_url: str) -> None:
    start = fresh_window(2001)
    with session_scope(database_url) as session, pytest.raises(InvalidInput) as caught:
        cost_report(session, tenant_id=None, group_by="color", start=start,
                    end=start + timedelta(days=1))
    assert caught.value.code == "invalid_input" and caught.value.status == 422
    assert caught.value.extra["field"] == "group_by"


def test_a_start_after_the_end_is_invalid_input(database_url: str) -> None:
    start = fresh_window(2001)
    with session_scope(database_url) as session, pytest.raises(InvalidInput):
        cost_report(session, tenant_id=None, group_by="model", start=start,
                    end=start - timedelta(seconds=1))


def test_tenants_are_found_by_name(database_url: str) -> None:
    with session_scope(database_url) as session:
        tenant = add_tenant(session)
    with session_scope(database_url) as session:
        assert tenant_id_for(session, tenant.name) == tenant.id
        with pytest.raises(NotFound):
            tenant_id_for(session, unique("nobody"))


def test_metric_totals_cover_every_charge_and_job_per_model(database_url: str) -> None:
    # given a model of its own with charges and jobs in several states
    model = unique("m")
    at = fresh_window(2001)
    with session_scope(database_url) as session:
        tenant = add_tenant(session)
        done = add_job(session, tenant, model=model, provider="prov-x")
        add_charge(session, done, "0.011", at)
        add_charge(session, done, "0.3", at, attempt=2)
        add_job(session, tenant, model=model, provider="prov-x", status="running")
    # when the totals are read
    with session_scope(database_url) as session:
        spend = [s for s in spend_by_model(session) if s.model == model]
        tallies = [(t.status, t.jobs) for t in jobs_by_model(session) if t.model == model]
    # then they are exact
    assert [(s.provider, s.amount, s.charges) for s in spend] == [("prov-x", D("0.311"), 2)]
    assert tallies == [("running", 1), ("succeeded", 1)]


class TestRange:
    NOW = datetime(2024, 5, 17, 13, 45, tzinfo=UTC)

    def test_defaults_to_this_utc_month_up_to_now(self) -> None:
        assert report_range(None, None, now=self.NOW) == (
            datetime(2024, 5, 1, tzinfo=UTC), self.NOW)

    def test_a_date_is_its_first_instant_and_naive_times_are_utc(self) -> None:
        assert report_range("2024-04-01", "2024-04-02T06:30", now=self.NOW) == (
            datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 4, 2, 6, 30, tzinfo=UTC))

    def test_offsets_are_converted_to_utc(self) -> None:
        assert parse_instant("2024-04-01T02:00:00+02:00", field="from") == \
            datetime(2024, 4, 1, tzinfo=UTC)
        assert parse_instant("2024-04-01T00:00:00Z", field="from") == \
            datetime(2024, 4, 1, tzinfo=UTC)

    def test_a_start_after_the_end_or_a_non_date_is_refused(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            report_range("2024-05-02", "2024-05-01", now=self.NOW)
        assert caught.value.extra["field"] == "from"
        with pytest.raises(InvalidInput) as caught:
            report_range(None, "yesterday", now=self.NOW)
        assert caught.value.extra["field"] == "to"
        # a `to` before the start of this month, without `from`, is a start after the end
        with pytest.raises(InvalidInput):
            report_range(None, "2024-04-30", now=self.NOW)
