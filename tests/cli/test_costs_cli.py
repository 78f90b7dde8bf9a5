"""`editq costs`: the ledger report read straight from the database, as a table or CSV."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from cli.main import main
from tests.shared.money.test_reports import Seeded, seed_two_tenants, unique

pytestmark = pytest.mark.timeout(60)

YEAR = 2003


@pytest.fixture
def seeded(database_url: str) -> Seeded:
    return seed_two_tenants(database_url, YEAR)


def costs(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["costs", *args], env={"EDITQ_DATABASE_URL": database_url})


def window(seeded: Seeded) -> list[str]:
    return ["--from", seeded.day1.date().isoformat(), "--to", seeded.end.date().isoformat()]


def table_rows(output: str) -> list[list[str]]:
    """The table's lines, split into cells (the table has no vertical rules)."""
    return [line.split() for line in output.splitlines() if line.strip()]


def test_the_table_shows_each_group_and_the_total(database_url: str, seeded: Seeded) -> None:
    # when one tenant's costs are asked for by model
    result = costs(database_url, "--tenant", seeded.mine.name, *window(seeded))
    # then each model is a line with its jobs and exact amount, and the last line the total
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert ["st-b", "1", "0.4"] in rows
    assert ["ws-a", "2", "0.311"] in rows
    assert rows[-1] == ["total", "3", "0.711"]
    assert "1.5" not in result.output  # the other tenant's charge


def test_every_tenant_by_default_and_by_tenant(database_url: str, seeded: Seeded) -> None:
    # when no tenant is named and the costs are grouped by tenant
    result = costs(database_url, "--group-by", "tenant", *window(seeded))
    # then both tenants are there and the total covers them
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert [seeded.other.name, "1", "1.5"] in rows
    assert [seeded.mine.name, "3", "0.711"] in rows
    assert rows[-1] == ["total", "4", "2.211"]


def test_csv_prints_the_same_report(database_url: str, seeded: Seeded) -> None:
    result = costs(database_url, "--group-by", "day", "--tenant", seeded.mine.name, "--csv",
                   *window(seeded))
    assert result.exit_code == 0, result.output
    assert result.output == ("day,jobs,amount,currency\n"
                             f"{seeded.day1.date().isoformat()},2,0.261,USD\n"
                             f"{seeded.day2.date().isoformat()},2,0.45,USD\n")


def test_json_prints_what_get_v1_costs_answers(database_url: str, seeded: Seeded) -> None:
    result = costs(database_url, "--tenant", seeded.mine.name, "--json", *window(seeded))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total"] == "0.711" and report["group_by"] == "model"
    assert {(r["model"], r["jobs"], r["amount"]) for r in report["rows"]} == {
        ("st-b", 1, "0.4"), ("ws-a", 2, "0.311")}


def test_bad_arguments_are_refused_with_a_reason(database_url: str) -> None:
    # an unknown grouping, a range backwards, an unknown tenant
    bad_group = costs(database_url, "--group-by", "color")
    assert bad_group.exit_code == 2 and "group_by must be one of" in bad_group.output
    backwards = costs(database_url, "--from", "2024-05-02", "--to", "2024-05-01")
    assert backwards.exit_code == 2 and "--from" in backwards.output
    nobody = costs(database_url, "--tenant", unique("nobody"))
    assert nobody.exit_code == 1 and "no tenant is called" in nobody.output
