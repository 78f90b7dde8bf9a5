"""Cost reports over the ledger, and the totals behind the Prometheus metrics.

One implementation for every reader: `GET /v1/costs`, `editq costs` and
`/metrics` all aggregate here, in SQL (GROUP BY), never by loading rows.

Conventions:
- a range is half-open, `start <= charged_at < end`, in UTC; a bare date means
  its first instant, so `2024-05-01` to `2024-06-01` is the month of May;
- `day` groups by the ledger's `charged_on` (the UTC day of the charge);
- rows grouped by day come in day order; every other grouping comes by amount,
  largest first, ties by name;
- amounts are exact Decimals (SUM over the Money column is exact on SQLite and
  PostgreSQL alike); only USD rows are summed, the currency every price is in.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.db import utcnow
from shared.errors import InvalidInput, NotFound
from shared.formats import as_utc, iso, money, parse_instant
from shared.models import Charge, Job, Tenant
from shared.statuses import CANCELED, FAILED, QUEUED, RUNNING, SUCCEEDED

GROUP_BY = ("model", "provider", "operation", "day", "tenant")
CURRENCY = "USD"
FINISHED_STATUSES = (SUCCEEDED, FAILED, CANCELED)
IN_PROGRESS_STATUSES = (QUEUED, RUNNING)


@dataclass(frozen=True)
class CostRow:
    """One group: its value (a day as YYYY-MM-DD), the jobs it charged, what it cost."""

    key: str
    jobs: int
    amount: Decimal


@dataclass(frozen=True)
class CostReport:
    group_by: str
    start: datetime
    end: datetime
    rows: tuple[CostRow, ...]
    total: Decimal
    # Distinct jobs over the whole report (not the sum of the rows' jobs: a job
    # retried across two days counts once here, once in each day's row).
    jobs: int
    currency: str = CURRENCY






def month_start(now: datetime) -> datetime:
    now = as_utc(now)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def report_range(start: str | None, end: str | None, *,
                 now: datetime | None = None) -> tuple[datetime, datetime]:
    """The range a reader asked for: `start` defaults to the first instant of the current
    UTC month, `end` to now; `start` after `end` is refused."""
    now = as_utc(now or utcnow())
    first = parse_instant(start, field="from") if start else month_start(now)
    last = parse_instant(end, field="to") if end else now
    _check_range(first, last)
    return first, last


def _check_range(start: datetime, end: datetime) -> None:
    if start > end:
        raise InvalidInput(f"from ({start.isoformat()}) is after to ({end.isoformat()})",
                           field="from")


def tenant_id_for(session: Session, name: str) -> str:
    """The id of the tenant called `name`; NotFound if there is none."""
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
    if tenant_id is None:
        raise NotFound(f"no tenant is called {name!r}", tenant=name)
    return tenant_id


def _group_column(group_by: str) -> InstrumentedAttribute[Any]:
    columns: dict[str, InstrumentedAttribute[Any]] = {
        "model": Charge.model, "provider": Charge.provider, "operation": Charge.operation,
        "day": Charge.charged_on, "tenant": Tenant.name,
    }
    if group_by not in columns:
        raise InvalidInput(f"group_by must be one of {', '.join(GROUP_BY)}; got {group_by!r}",
                           field="group_by", allowed=list(GROUP_BY))
    return columns[group_by]


def cost_report(session: Session, *, tenant_id: str | None, group_by: str,
                start: datetime, end: datetime) -> CostReport:
    """What was charged in [start, end), grouped by `group_by` (one of GROUP_BY).

    `tenant_id` None is every tenant (for operators and admin keys); `tenant`
    grouping names each tenant and is only useful then.
    """
    key = _group_column(group_by)
    start, end = as_utc(start), as_utc(end)
    _check_range(start, end)
    where = [Charge.charged_at >= start, Charge.charged_at < end, Charge.currency == CURRENCY]
    if tenant_id is not None:
        where.append(Charge.tenant_id == tenant_id)

    jobs = func.count(distinct(Charge.job_id))
    amount = func.sum(Charge.amount)
    query = select(key, jobs, amount).select_from(Charge).where(*where).group_by(key)
    if group_by == "tenant":
        query = query.join(Tenant, Tenant.id == Charge.tenant_id)
    query = query.order_by(key) if group_by == "day" else query.order_by(amount.desc(), key)
    rows = tuple(CostRow(key=_key_text(value), jobs=int(count), amount=_decimal(total))
                 for value, count, total in session.execute(query))

    total_jobs, total = session.execute(select(jobs, amount).where(*where)).one()
    return CostReport(group_by=group_by, start=start, end=end, rows=rows,
                      total=_decimal(total), jobs=int(total_jobs))


def _key_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _decimal(value: Any) -> Decimal:
    """SUM answers NULL over no rows; the Money type has already made the rest Decimal."""
    return Decimal(0) if value is None else Decimal(value)


def report_view(report: CostReport) -> dict[str, Any]:
    """The report as GET /v1/costs answers it (and `editq costs --json` prints it)."""
    return {
        "rows": [
            {report.group_by: row.key, "jobs": row.jobs, "amount": money(row.amount)}
            for row in report.rows
        ],
        "total": money(report.total),
        "currency": report.currency,
        "group_by": report.group_by,
        "from": iso(report.start),
        "to": iso(report.end),
    }


def to_csv(report: CostReport) -> str:
    """`<group>,jobs,amount,currency`, then one line per row; amounts as plain decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report.group_by, "jobs", "amount", "currency"])
    for row in report.rows:
        writer.writerow([_cell(row.key), row.jobs, money(row.amount), report.currency])
    return out.getvalue()


def _cell(text: str) -> str:
    """A name a spreadsheet would run as a formula (=, +, -, @) is quoted as text."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


# --- the figures behind /metrics: all time, every tenant -----------------------------


@dataclass(frozen=True)
class ModelSpend:
    provider: str
    model: str
    amount: Decimal
    charges: int


@dataclass(frozen=True)
class JobTally:
    provider: str
    model: str
    status: str
    jobs: int


def spend_by_model(session: Session) -> list[ModelSpend]:
    """Every USD charge ever, per (provider, model): its sum and its number of rows."""
    query = (select(Charge.provider, Charge.model, func.sum(Charge.amount), func.count())
             .where(Charge.currency == CURRENCY)
             .group_by(Charge.provider, Charge.model)
             .order_by(Charge.provider, Charge.model))
    return [ModelSpend(provider, model, _decimal(amount), int(count))
            for provider, model, amount, count in session.execute(query)]


def jobs_by_model(session: Session) -> list[JobTally]:
    """Every job ever, per (provider, model, status)."""
    query = (select(Job.provider, Job.model, Job.status, func.count())
             .group_by(Job.provider, Job.model, Job.status)
             .order_by(Job.provider, Job.model, Job.status))
    return [JobTally(provider, model, status, int(count))
            for provider, model, status, count in session.execute(query)]

