"""GET /v1/costs (cost reports, JSON or CSV), GET /v1/budget, GET /v1/usage (the
providers' limits and the shares interactive and bulk work hold) and GET /metrics
(Prometheus).

Both read the ledger through shared/money/reports.py, the one implementation the
`editq costs` command uses too. /metrics is computed from the database at
scrape time, so every API process answers the same figures, and they survive
restarts (nothing is counted in memory).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Header, Query, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy.orm import Session

from api.deps import PrincipalDep, ServicesDep, SettingsDep, WorkDep
from api.schemas import BudgetOut, CostReportOut, UsageOut
from shared.db import session_scope
from shared.errors import Forbidden
from shared.guards.ratelimit import seen_by
from shared.money import budgets
from shared.money.reports import (
    FINISHED_STATUSES,
    GROUP_BY,
    IN_PROGRESS_STATUSES,
    CostReport,
    cost_report,
    jobs_by_model,
    report_range,
    report_view,
    spend_by_model,
    tenant_id_for,
    to_csv,
)

router = APIRouter()

# The classic text format, which every Prometheus version reads.
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _wants_csv(accept: str | None) -> bool:
    media_types = (part.split(";", 1)[0].strip().lower() for part in (accept or "").split(","))
    return "text/csv" in media_types


GroupBy = Literal["model", "provider", "operation", "day", "tenant"]
assert set(get_args(GroupBy)) == set(GROUP_BY)  # the one list: shared.reports.GROUP_BY


@router.get("/v1/costs", tags=["costs"], response_model=None,
            responses={200: {"model": CostReportOut,
                             "content": {"text/csv": {"schema": {"type": "string"}}}}})
def get_costs(
    work: WorkDep,
    principal: PrincipalDep,
    group_by: Annotated[GroupBy, Query(description="tenant: admin keys only")] = "model",
    start: Annotated[str | None, Query(alias="from", description=(
        "ISO date or date-time, UTC if no offset; default: the first instant of the "
        "current UTC month"))] = None,
    end: Annotated[str | None, Query(alias="to", description=(
        "ISO date or date-time, excluded; default: now"))] = None,
    tenant: Annotated[str | None, Query(max_length=200, description=(
        "a tenant's name (admin keys only); default: the caller's tenant, or every "
        "tenant for an admin key"))] = None,
    accept: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | Response:
    """What was charged in [from, to), grouped by model, provider, operation, UTC day
    or tenant. `Accept: text/csv` answers the same report as CSV."""
    if not principal.is_admin and (group_by == "tenant" or tenant is not None):
        raise Forbidden("only an admin key may report on other tenants (tenant=, "
                        "group_by=tenant)")
    first, last = report_range(start, end)

    def read(session: Session) -> CostReport:
        if not principal.is_admin:
            tenant_id: str | None = principal.tenant_id
        else:
            tenant_id = tenant_id_for(session, tenant) if tenant is not None else None
        return cost_report(session, tenant_id=tenant_id, group_by=group_by,
                           start=first, end=last)

    report = work.now(read)
    if _wants_csv(accept):
        return Response(to_csv(report), media_type="text/csv")
    return report_view(report)


@router.get("/v1/budget", tags=["costs"], response_model=BudgetOut)
def get_budget(settings: SettingsDep, work: WorkDep, principal: PrincipalDep) -> dict[str, Any]:
    """The caller's plan and budgets this month: spent, in flight and what remains."""
    return work.now(lambda session: budgets.standing(
        session, settings, principal.tenant_id).as_dict())


@router.get("/v1/usage", tags=["costs"], response_model=UsageOut)
def get_usage(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """Each rate-limited provider's limits now: how much of each interactive and bulk
    work hold, bulk's cap (EDITQ_BULK_SHARE of it), and the caller's own part of bulk.
    An admin key sees every tenant's part."""
    def read() -> dict[str, Any]:
        return {name: seen_by(usage, principal.tenant_id, principal.is_admin)
                for name, usage in services.limits_in_use().items()}

    return {"bulk_share": services.settings.bulk_share,
            "bulk_weight": services.bulk_weight(principal.tenant_id),
            "providers": read()}


class LedgerCollector:
    """Reads the ledger and the jobs table at each scrape (every tenant, all time)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterable[Metric]:
        cost, charges, created, finished, in_progress = families = _families()
        with session_scope(self.database_url) as session:
            spend = spend_by_model(session)
            tallies = jobs_by_model(session)
        for row in spend:
            # Prometheus samples are floats; the exact figures are in /v1/costs.
            cost.add_metric([row.provider, row.model], float(row.amount))
            charges.add_metric([row.provider, row.model], row.charges)
        per_model: dict[tuple[str, str], int] = {}
        for tally in tallies:
            pair = (tally.provider, tally.model)
            per_model[pair] = per_model.get(pair, 0) + tally.jobs
            labels = [tally.provider, tally.model, tally.status]
            if tally.status in FINISHED_STATUSES:
                finished.add_metric(labels, tally.jobs)
            elif tally.status in IN_PROGRESS_STATUSES:
                in_progress.add_metric(labels, tally.jobs)
        for (provider, model), count in per_model.items():
            created.add_metric([provider, model], count)
        return families

    def describe(self) -> Iterable[Metric]:
        """The names, without touching the database (registration calls this)."""
        return _families()


def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily,
                         CounterMetricFamily, GaugeMetricFamily]:
    by_model, by_status = ["provider", "model"], ["provider", "model", "status"]
    return (
        CounterMetricFamily("editq_cost_usd", "USD charged, from the ledger", labels=by_model),
        CounterMetricFamily("editq_charges", "Charged provider calls (ledger rows)",
                            labels=by_model),
        CounterMetricFamily("editq_jobs_created", "Jobs accepted", labels=by_model),
        CounterMetricFamily("editq_jobs_finished", "Jobs that succeeded, failed or were "
                            "canceled", labels=by_status),
        GaugeMetricFamily("editq_jobs_in_progress", "Jobs queued or running", labels=by_status),
    )


class LimitsCollector:
    """Reads each limited provider's limits in Redis at each scrape: the limit, bulk's
    cap, and what normal and low priority work hold of it (GET /v1/usage in numbers)."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterable[Metric]:
        limit, used, tenants = families = _limit_families()
        for provider, usage in self.services.limits_in_use().items():
            for name in ("rate", "in_flight"):
                if not usage.get("available") or (part := usage.get(name)) is None:
                    continue
                limit.add_metric([provider, name, "all"], part["limit"])
                limit.add_metric([provider, name, "low"], part["bulk_limit"])
                used.add_metric([provider, name, "normal"], part["interactive"])
                used.add_metric([provider, name, "low"], part["bulk"])
                tenants.add_metric([provider, name], len(part["bulk_by_tenant"]))
        return families

    def describe(self) -> Iterable[Metric]:
        return _limit_families()


def _limit_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily("editq_provider_limit", "A provider's limit (rate: calls per "
                          "window; in_flight: slots), in all and bulk's (priority low) cap",
                          labels=["provider", "limit", "priority"]),
        GaugeMetricFamily("editq_provider_limit_used", "What normal and low priority work "
                          "hold of a provider's limit now", labels=["provider", "limit",
                                                                    "priority"]),
        # (how many, not who: /metrics answers without a key; GET /v1/usage with an admin
        # key says who)
        GaugeMetricFamily("editq_provider_bulk_tenants", "Tenants whose bulk work holds "
                          "some of a provider's limit now", labels=["provider", "limit"]),
    )


def metrics_registry(database_url: str, services: Any = None) -> CollectorRegistry:
    """One registry per app, built with it (never the global one)."""
    registry = CollectorRegistry()
    registry.register(LedgerCollector(database_url))
    if services is not None:
        registry.register(LimitsCollector(services))
    return registry


@router.get("/metrics", tags=["health"], response_class=Response,
            responses={200: {"content": {PROMETHEUS_TEXT: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format: spend, charges and jobs per provider and model."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=PROMETHEUS_TEXT)
