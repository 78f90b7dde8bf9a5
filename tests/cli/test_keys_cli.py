"""`editq keys list / revoke / create --existing`, and what database commands say when
there is no database, run as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.migrate import upgrade
from tests.cli.test_cli import run
from tests.conftest import make_settings
from tests.helpers import b64, image_bytes

pytestmark = pytest.mark.timeout(60)


def create(env: dict[str, str], *args: str) -> str:
    result = run(["keys", "create", *args], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


def test_keys_are_listed_without_the_key_and_a_revoked_one_is_refused(
        tmp_path: Path, s3_url: str) -> None:
    # given two keys of one tenant, the second made for the existing tenant
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    env = {"EDITQ_DATABASE_URL": url}
    upgrade(url)
    first = create(env, "--tenant", "acme")
    second = create(env, "--tenant", "acme", "--existing")
    settings = make_settings(database_url=url, s3_endpoint_url=s3_url, s3_bucket="unused")
    with TestClient(create_app(settings)) as client:
        # when one is used
        auth = {"Authorization": f"Bearer {first}"}
        assert client.get("/v1/jobs", headers=auth).status_code == 200
        # then the list shows both, when each was used, and never a key
        listed = run(["keys", "list"], env)
        assert listed.returncode == 0, listed.stderr
        assert first not in listed.stdout and second not in listed.stdout
        rows = [line.split() for line in listed.stdout.splitlines() if "acme" in line]
        assert len(rows) == 2
        used = [row for row in rows if "never" not in row]
        assert len(used) == 1 and used[0][1] == first[:10] + "..."
        # when the used key is revoked
        revoked = run(["keys", "revoke", used[0][0]], env)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        # then the API refuses it, and the other still works
        assert client.get("/v1/jobs", headers=auth).status_code == 401
        assert client.get("/v1/jobs", headers={
            "Authorization": f"Bearer {second}"}).status_code == 200
    # and the list shows only the live key, unless asked for all
    assert len([x for x in run(["keys", "list"], env).stdout.splitlines() if "acme" in x]) == 1
    assert "acme" in run(["keys", "list", "--all"], env).stdout


def test_existing_refuses_to_make_a_tenant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    result = run(["keys", "create", "--tenant", "typo", "--existing"],
                 {"EDITQ_DATABASE_URL": url})
    assert result.returncode == 1 and "no tenant 'typo'" in result.stderr


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "create", "--tenant", "a"],
                                     ["keys", "revoke", "0123456789ab"], ["costs"],
                                     ["reaper", "--once"]])
def test_a_missing_database_is_said_in_one_line_and_no_file_is_left(
        tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "missing.db"
    result = run(command, {"EDITQ_DATABASE_URL": f"sqlite:///{path}"})
    assert result.returncode == 1
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert "no database at" in line and "editq db upgrade" in line
    assert not path.exists()


def test_a_database_not_migrated_is_said_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    result = run(["keys", "list"], {"EDITQ_DATABASE_URL": f"sqlite:///{path}"})
    assert result.returncode == 1
    [line] = [x for x in result.stderr.splitlines() if x.strip()]
    assert "not migrated" in line and "editq db upgrade" in line


def test_a_tenants_retention_is_set_with_its_key_and_its_jobs_keep_to_it(
        tmp_path: Path, s3_url: str) -> None:
    # given a tenant whose outputs are kept 7 days, and inputs for good
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    result = run(["keys", "create", "--tenant", "keeper", "--keep-outputs-days", "7",
                  "--keep-inputs-days", "forever"], {"EDITQ_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert "outputs kept 7 day(s)" in result.stdout and "inputs kept for good" in result.stdout
    key = result.stdout.split()[-1]
    # when it submits a job, then the job keeps its images so
    settings = make_settings(database_url=url, s3_endpoint_url=s3_url,
                             s3_bucket="editq-keys-retention")
    with TestClient(create_app(settings)) as client:
        job = client.post("/v1/jobs", headers={"Authorization": f"Bearer {key}"}, json={
            "image": b64(image_bytes()), "operation": "grayscale"}).json()
    assert (job["retention"]["outputs_days"], job["retention"]["inputs_days"]) == (7.0, None)
    # and a value that is not a number of days is refused with its option's name
    bad = run(["keys", "create", "--tenant", "keeper", "--keep-outputs-days", "a week"],
              {"EDITQ_DATABASE_URL": url})
    assert bad.returncode != 0 and "--keep-outputs-days" in bad.stderr


def test_budget_set_and_show_change_what_the_tenant_may_spend(tmp_path: Path) -> None:
    # given a tenant with no budget
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    env = {"EDITQ_DATABASE_URL": url}
    upgrade(url)
    create(env, "--tenant", "acme")
    # when its budget and one model's are set
    assert run(["budget", "set", "acme", "25.5"], env).stdout.strip() == (
        "acme's monthly budget: 25.5 USD")
    assert run(["budget", "set", "acme", "3", "--model", "qwen-edit"], env).returncode == 0
    # then `budget show` answers them as GET /v1/budget would, nothing spent yet
    shown = json.loads(run(["budget", "show", "acme", "--json"], env).stdout)
    assert [(b["scope"], b["budget"], b["remaining"]) for b in shown["budgets"]] == [
        ("tenant", "25.5", "25.5"), ("model:qwen-edit", "3", "3")]
    table = run(["budget", "show", "acme"], env)
    assert table.returncode == 0 and "qwen-edit" in table.stdout
    # when the model's budget is removed and a bad amount or model is given
    assert run(["budget", "set", "acme", "none", "--model", "qwen-edit"], env).returncode == 0
    shown = json.loads(run(["budget", "show", "acme", "--json"], env).stdout)
    assert [b["scope"] for b in shown["budgets"]] == ["tenant"]
    bad = run(["budget", "set", "acme", "-1"], env)
    unknown = run(["budget", "set", "acme", "1", "--model", "nope"], env)
    # then each mistake is refused in words, and nothing changed
    assert bad.returncode == 2 and "USD" in bad.stderr
    assert unknown.returncode == 2 and "nope" in unknown.stderr
    assert run(["budget", "show", "nobody"], env).returncode == 1
