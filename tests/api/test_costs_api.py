"""GET /v1/costs and GET /metrics through the real app, on SQLite and PostgreSQL.

The ledger is seeded directly (tests/shared/money/test_reports.py's helpers), each
test in a window of days no other test uses, so every figure is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.config import Settings
from shared.db import session_scope, utcnow
from shared.tenants import create_api_key
from tests.shared.money.test_reports import (
    Seeded,
    add_charge,
    add_job,
    add_tenant,
    seed_two_tenants,
    unique,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.every_database]

YEAR = 2002


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def seeded(settings: Settings) -> Seeded:
    return seed_two_tenants(settings.database_url, YEAR)


def key_for(settings: Settings, tenant: str, *, admin: bool = False) -> dict[str, str]:
    with session_scope(settings.database_url) as session:
        key = create_api_key(session, tenant, admin=admin)
    return {"Authorization": f"Bearer {key}"}


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def window(seeded: Seeded) -> dict[str, str]:
    return {"from": iso(seeded.day1), "to": iso(seeded.end)}


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code and problem["status"] == status and problem["detail"]
    return problem


class TestReport:
    def test_a_tenant_sees_its_own_costs_only(self, client: TestClient, settings: Settings,
                                              seeded: Seeded) -> None:
        # given a key of a tenant, whose neighbour was charged 1.5 on st-b in the same days
        headers = key_for(settings, seeded.mine.name)
        # when it asks for its costs by model
        response = client.get("/v1/costs", params={"group_by": "model", **window(seeded)},
                              headers=headers)
        # then it gets its own figures, exact, largest first, and nothing of the neighbour's
        assert response.status_code == 200, response.text
        assert response.json() == {
            "rows": [{"model": "st-b", "jobs": 1, "amount": "0.4"},
                     {"model": "ws-a", "jobs": 2, "amount": "0.311"}],
            "total": "0.711", "currency": "USD", "group_by": "model",
            "from": iso(seeded.day1), "to": iso(seeded.end),
        }

    def test_by_day_and_with_dates_only(self, client: TestClient, settings: Settings,
                                        seeded: Seeded) -> None:
        # given a tenant's charges over two days
        headers = key_for(settings, seeded.mine.name)
        # when it asks by day, with plain dates
        response = client.get("/v1/costs", headers=headers, params={
            "group_by": "day", "from": seeded.day1.date().isoformat(),
            "to": seeded.end.date().isoformat()})
        # then each UTC day is a row, in order, and the dates are their first instants
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rows"] == [
            {"day": seeded.day1.date().isoformat(), "jobs": 2, "amount": "0.261"},
            {"day": seeded.day2.date().isoformat(), "jobs": 2, "amount": "0.45"}]
        assert body["total"] == "0.711"
        assert (body["from"], body["to"]) == (iso(seeded.day1), iso(seeded.end))

    def test_defaults_to_this_month_up_to_now(self, client: TestClient,
                                              settings: Settings) -> None:
        # given a tenant charged just now
        name = unique("tenant")
        with session_scope(settings.database_url) as session:
            tenant = add_tenant(session, name)
            add_charge(session, add_job(session, tenant, model="now-model"), "0.07", utcnow())
        # when it asks for its costs without a range
        response = client.get("/v1/costs", headers=key_for(settings, name))
        # then the range is this UTC month up to now, and the charge is in it
        assert response.status_code == 200, response.text
        body = response.json()
        now = datetime.now(UTC)
        assert body["from"] == iso(datetime(now.year, now.month, 1, tzinfo=UTC))
        assert body["rows"] == [{"model": "now-model", "jobs": 1, "amount": "0.07"}]
        assert body["total"] == "0.07" and body["group_by"] == "model"

    def test_csv_when_asked_for_in_accept(self, client: TestClient, settings: Settings,
                                          seeded: Seeded) -> None:
        # given a tenant's charges
        headers = {**key_for(settings, seeded.mine.name), "Accept": "text/csv"}
        # when it asks for them as CSV
        response = client.get("/v1/costs", params={"group_by": "operation", **window(seeded)},
                              headers=headers)
        # then the same report comes as CSV
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert response.text == ("operation,jobs,amount,currency\n"
                                 "inpaint,2,0.411,USD\n"
                                 "general_edit,1,0.3,USD\n")

    def test_without_a_key_is_unauthorized(self, client: TestClient) -> None:
        assert_problem(client.get("/v1/costs"), 401, "unauthorized")


class TestAdmin:
    def test_an_admin_sees_every_tenant_and_groups_by_tenant(
            self, client: TestClient, settings: Settings, seeded: Seeded) -> None:
        # given an admin key of a third tenant
        headers = key_for(settings, unique("ops"), admin=True)
        # when it asks for the costs by tenant
        response = client.get("/v1/costs", params={"group_by": "tenant", **window(seeded)},
                              headers=headers)
        # then every tenant charged in the range is a row under its name
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["rows"] == [
            {"tenant": seeded.other.name, "jobs": 1, "amount": "1.5"},
            {"tenant": seeded.mine.name, "jobs": 3, "amount": "0.711"}]
        assert body["total"] == "2.211"

    def test_an_admin_may_narrow_to_one_tenant(self, client: TestClient, settings: Settings,
                                               seeded: Seeded) -> None:
        headers = key_for(settings, unique("ops"), admin=True)
        # when an admin names a tenant
        response = client.get("/v1/costs", headers=headers, params={
            "group_by": "model", "tenant": seeded.other.name, **window(seeded)})
        # then only that tenant's costs are there
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [{"model": "st-b", "jobs": 1, "amount": "1.5"}]
        assert response.json()["total"] == "1.5"
        # and a tenant that does not exist is a 404
        missing = client.get("/v1/costs", headers=headers,
                             params={"tenant": unique("nobody"), **window(seeded)})
        assert_problem(missing, 404, "not_found")

    def test_a_tenant_may_not_look_at_other_tenants(self, client: TestClient,
                                                    settings: Settings,
                                                    seeded: Seeded) -> None:
        headers = key_for(settings, seeded.mine.name)
        # when a non-admin key groups by tenant, or names a tenant (even its own)
        by_tenant = client.get("/v1/costs", params={"group_by": "tenant"}, headers=headers)
        named = client.get("/v1/costs", params={"tenant": seeded.other.name}, headers=headers)
        own = client.get("/v1/costs", params={"tenant": seeded.mine.name}, headers=headers)
        # then each is forbidden
        for response in (by_tenant, named, own):
            assert_problem(response, 403, "forbidden")
        assert seeded.other.name not in named.text


class TestInvalid:
    def test_an_unknown_grouping_is_invalid_input(self, client: TestClient,
                                                  settings: Settings) -> None:
        response = client.get("/v1/costs", params={"group_by": "color"},
                              headers=key_for(settings, unique("tenant")))
        problem = assert_problem(response, 422, "invalid_input")
        assert problem["field"] == "group_by"

    def test_from_after_to_is_invalid_input(self, client: TestClient,
                                            settings: Settings) -> None:
        response = client.get("/v1/costs", params={"from": "2024-05-02", "to": "2024-05-01"},
                              headers=key_for(settings, unique("tenant")))
        problem = assert_problem(response, 422, "invalid_input")
        assert problem["field"] == "from"

    def test_a_date_that_is_not_one_is_invalid_input(self, client: TestClient,
                                                     settings: Settings) -> None:
        response = client.get("/v1/costs", params={"to": "last tuesday"},
                              headers=key_for(settings, unique("tenant")))
        problem = assert_problem(response, 422, "invalid_input")
        assert problem["field"] == "to"


def metric_lines(text: str, name: str, model: str) -> list[str]:
    return sorted(line for line in text.splitlines()
                  if line.startswith(name + "{") and f'model="{model}"' in line)


def test_metrics_are_read_from_the_database_at_each_scrape(client: TestClient,
                                                           settings: Settings) -> None:
    # given a model of its own with three charges and jobs in every state
    model, provider = unique("metric-model"), "prov-m"
    at = datetime(YEAR, 12, 1, tzinfo=UTC)
    with session_scope(settings.database_url) as session:
        tenant = add_tenant(session)
        done = add_job(session, tenant, model=model, provider=provider)
        add_charge(session, done, "0.011", at)
        add_charge(session, done, "0.25", at, attempt=2)
        failed = add_job(session, tenant, model=model, provider=provider, status="failed")
        add_charge(session, failed, "0.05", at)
        for status in ("canceled", "queued", "running", "running"):
            add_job(session, tenant, model=model, provider=provider, status=status)
    # when /metrics is scraped, without a key
    response = client.get("/metrics")
    # then the counters and the gauge hold the database's figures
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    labels = f'model="{model}",provider="{provider}"'  # the exposition sorts labels
    assert metric_lines(text, "editq_cost_usd_total", model) == [
        f"editq_cost_usd_total{{{labels}}} 0.311"]
    assert metric_lines(text, "editq_charges_total", model) == [
        f"editq_charges_total{{{labels}}} 3.0"]
    assert metric_lines(text, "editq_jobs_created_total", model) == [
        f"editq_jobs_created_total{{{labels}}} 6.0"]
    assert metric_lines(text, "editq_jobs_finished_total", model) == sorted(
        f'editq_jobs_finished_total{{{labels},status="{status}"}} 1.0'
        for status in ("canceled", "failed", "succeeded"))
    assert metric_lines(text, "editq_jobs_in_progress", model) == [
        f'editq_jobs_in_progress{{{labels},status="queued"}} 1.0',
        f'editq_jobs_in_progress{{{labels},status="running"}} 2.0']
    assert "# TYPE editq_cost_usd_total counter" in text
    assert "# TYPE editq_jobs_in_progress gauge" in text

    # when another charge is written and a second app (another process) is scraped
    with session_scope(settings.database_url) as session:
        add_charge(session, add_job(session, tenant, model=model, provider=provider),
                   "0.1", at + timedelta(hours=1))
    with TestClient(create_app(settings)) as other:
        again = other.get("/metrics").text
    # then it answers the same, up-to-date figures
    assert metric_lines(again, "editq_cost_usd_total", model) == [
        f"editq_cost_usd_total{{{labels}}} 0.411"]
    assert metric_lines(again, "editq_charges_total", model) == [
        f"editq_charges_total{{{labels}}} 4.0"]
    # and the first app's own registry reads it too
    assert metric_lines(client.get("/metrics").text, "editq_jobs_created_total", model) == [
        f"editq_jobs_created_total{{{labels}}} 7.0"]
